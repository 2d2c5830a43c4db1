package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock/internal/bench"
	"github.com/dlock-dev/dlock/pglock"
)

// counterPgCPU names the postgres group's server-wide counter: the CPU
// time of the server's processes, read from /proc when this program
// started the server.
const counterPgCPU = "pg cpu µs"

// postgresGroup is dlock's pglock and hand-rolled session-level advisory
// locks on the server at dsn. Each subject has a pgxpool of its own, with
// pgxpool's defaults, and a tracer that counts the statements it sends
// (its round trips). pid, when not 0, is the postmaster of a server this
// program started, whose CPU time is then counted server-wide, as Redis's
// INFO is.
func postgresGroup(ctx context.Context, dsn string, pid int, floorTime time.Duration, report *bench.Report) (group, func(), error) {
	var (
		pools    []*pgxpool.Pool
		backends []*pglock.Backend
	)
	cleanup := func() {
		for _, b := range backends {
			_ = b.Close()
		}
		for _, p := range pools {
			p.Close()
		}
	}
	pool := func() (*pgxpool.Pool, bench.Counter, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, bench.Counter{}, fmt.Errorf("peers: --postgres: %w", err)
		}
		rt := new(pgRoundTrips)
		cfg.ConnConfig.Tracer = rt
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, bench.Counter{}, fmt.Errorf("peers: postgres pool: %w", err)
		}
		pools = append(pools, p)
		return p, bench.Counter{
			Name: bench.CounterRoundTrips,
			Read: func(context.Context) (uint64, error) { return rt.n.Load(), nil },
		}, nil
	}

	floorPool, _, err := pool()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	where := pgAddr(floorPool)
	fl, err := postgresFloor(ctx, floorPool, "dlock-bench/floor", floorTime)
	if err != nil {
		cleanup()
		return group{}, nil, fmt.Errorf("peers: postgres at %s: %w", where, err)
	}
	fl.Detail += " on " + where
	report.Floors = append(report.Floors, fl)

	var cpu *serverCPU
	if pid != 0 {
		cpu = &serverCPU{pid: pid}
		if _, err := cpu.read(); err != nil {
			report.Notes = append(report.Notes, fmt.Sprintf("postgres server CPU not reported: %v", err))
			cpu = nil
		}
	}
	counted := func(s bench.Subject, roundTrips bench.Counter) bench.Subject {
		if cpu != nil {
			s.Counters = append(s.Counters, cpu.counter())
		}
		s.Counters = append(s.Counters, roundTrips)
		return s
	}

	dpool, drt, err := pool()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	be, err := pglock.New(dpool)
	if err != nil {
		cleanup()
		return group{}, nil, fmt.Errorf("pglock: %w", err)
	}
	backends = append(backends, be)
	// The first operation would create the table; create it before the
	// timing starts.
	if err := be.Setup(ctx); err != nil {
		cleanup()
		return group{}, nil, fmt.Errorf("pglock: %w", err)
	}

	apool, art, err := pool()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	return group{name: "postgres", subjects: []bench.Subject{
		counted(bench.Dlock("dlock", be), drt),
		counted(advisorySubject(apool), art),
	}}, cleanup, nil
}

// pgAddr is host:port of the pool's server, for messages (a DSN may hold
// a password).
func pgAddr(p *pgxpool.Pool) string {
	c := p.Config().ConnConfig
	return net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
}

// pgRoundTrips counts the round trips a pool's connections make: Query,
// QueryRow and Exec (one each), a batch (one: pgx sends it as a
// pipeline), and the Prepare that pgx sends before a statement's first run
// on a connection. It does not see the ping pgxpool sends when it hands
// out a connection idle for over a second.
type pgRoundTrips struct{ n atomic.Uint64 }

var (
	_ pgx.QueryTracer   = (*pgRoundTrips)(nil)
	_ pgx.BatchTracer   = (*pgRoundTrips)(nil)
	_ pgx.PrepareTracer = (*pgRoundTrips)(nil)
)

func (t *pgRoundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *pgRoundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (t *pgRoundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (t *pgRoundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *pgRoundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (t *pgRoundTrips) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *pgRoundTrips) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// postgresFloor measures an INSERT of a row into a table of one text
// column (its primary key) and its DELETE, each its own transaction, on
// one connection: two round trips and two commits, what a pair costs at
// the least on this server with no lock logic. The table
// (dlock_peers_floor) is dropped afterwards.
func postgresFloor(ctx context.Context, pool *pgxpool.Pool, key string, d time.Duration) (bench.Floor, error) {
	// A pool waits for a reachable server rather than failing: bound the
	// first request, so that a wrong --postgres fails at once.
	checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := pool.Acquire(checkCtx)
	if err == nil {
		_, err = conn.Exec(checkCtx, `CREATE TABLE IF NOT EXISTS dlock_peers_floor (key text PRIMARY KEY)`)
	}
	cancel()
	if err != nil {
		if conn != nil {
			conn.Release()
		}
		return bench.Floor{}, fmt.Errorf("not reachable: %w", err)
	}
	defer conn.Release()
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS dlock_peers_floor`) }()
	fl, err := bench.MeasureFloor(ctx, "postgres", "INSERT "+key+" + DELETE "+key+" (two round trips, two commits)", d, func() error {
		if _, err := conn.Exec(ctx, `INSERT INTO dlock_peers_floor (key) VALUES ($1)`, key); err != nil {
			return err
		}
		_, err := conn.Exec(ctx, `DELETE FROM dlock_peers_floor WHERE key = $1`, key)
		return err
	})
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("floor: %w", err)
	}
	return fl, err
}

// advisorySubject is the lock most programs on PostgreSQL write for
// themselves: a session-level advisory lock on hashtext(key), held by a
// connection of the pool for as long as the lock is held. TryLock takes a
// connection and asks pg_try_advisory_lock; Lock takes one and waits in
// pg_advisory_lock, in the server's lock queue (no polling; the server
// grants the lock to the waiter that asked first). Unlock is
// pg_advisory_unlock, and the connection goes back to the pool. There is
// no lease (the lock lasts until unlocked or its session ends) and no
// fence. A waiter whose context ends is cut off by pgx's default, which
// closes its connection, and the pool replaces it.
func advisorySubject(pool *pgxpool.Pool) bench.Subject {
	return bench.Subject{
		Name:      "advisory",
		NewLocker: func(int) (bench.Locker, error) { return advisoryLocker{pool}, nil },
	}
}

type advisoryLocker struct{ pool *pgxpool.Pool }

func (l advisoryLocker) TryLock(ctx context.Context, key string) (bench.Held, bool, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, key).Scan(&ok); err != nil {
		discard(conn)
		return nil, false, err
	}
	if !ok {
		conn.Release()
		return nil, false, nil
	}
	return advisoryHeld{conn, key}, true, nil
}

func (l advisoryLocker) Lock(ctx context.Context, key string) (bench.Held, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, key); err != nil {
		discard(conn)
		return nil, err
	}
	return advisoryHeld{conn, key}, nil
}

type advisoryHeld struct {
	conn *pgxpool.Conn
	key  string
}

func (h advisoryHeld) Fence() uint64 { return 0 }

func (h advisoryHeld) Unlock(ctx context.Context) error {
	var ok bool
	if err := h.conn.QueryRow(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, h.key).Scan(&ok); err != nil {
		discard(h.conn) // its session may still hold the lock: end it
		return err
	}
	h.conn.Release()
	if !ok {
		return errors.New("advisory: unlock: not held")
	}
	return nil
}

// discard closes a pooled connection whose session may hold an advisory
// lock, so that the lock ends with it, and gives it back to the pool,
// which drops it.
func discard(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Conn().Close(ctx)
	conn.Release()
}
