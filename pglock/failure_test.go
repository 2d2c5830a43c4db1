package pglock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/pglock"
)

// within bounds how long a failing call may take: generous, since the
// point is that it returns (no hang), not how fast.
const within = 5 * time.Second

// TestServerDown: every operation on a server that is gone fails with
// ErrUnavailable within the backend's timeout, or with the caller's
// context error when the caller's deadline is sooner; a held lock fires
// its lost signal when its validity passes without a refresh.
func TestServerDown(t *testing.T) {
	srv := testserver.StartPostgres(t)
	b := newBackend(t, newPool(t, srv.DSN()), pglock.WithTimeout(300*time.Millisecond))
	dlocktest.CheckStoreDown(t, dlock.New(b), "down", srv.Stop, within)
}

// TestRestartKeepsLeases: PostgreSQL keeps committed rows and the
// sequence across a crash, so a holder keeps its lock (its refresh works
// once the server is back), a waiter that waited across the restart is
// woken by the release that follows it (its backend listens again), and
// the next grant's fence is above the one before.
func TestRestartKeepsLeases(t *testing.T) {
	srv := testserver.StartPostgres(t)
	b := newBackend(t, newPool(t, srv.DSN()))
	listen(t, b)
	c := dlock.New(b)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	held, err := c.TryAcquire(ctx, "kept", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	waiter, waiting := dlocktest.WatchDenials(b)
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := dlock.New(waiter).Acquire(ctx, "kept", dlock.WithTTL(time.Minute))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-waiting
	// Asleep before the restart: one that subscribed while the server was
	// down would look at once, find it down and end its wait with the
	// error (CI under load, once).
	waitfor.Until(t, "the waiter to sleep", func() bool { return pglock.Sleeping(b, "kept") == 1 })

	srv.Restart(t)
	if err := held.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after the restart: %v", err)
	}
	listen(t, b) // after the restart, again
	if err := held.Release(ctx); err != nil {
		t.Fatalf("Release after the restart: %v", err)
	}
	select {
	case l := <-got:
		if l == nil {
			t.Fatal("the waiter failed")
		}
		if l.Fence() <= held.Fence() {
			t.Errorf("fence after the restart %d, want above %d", l.Fence(), held.Fence())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the waiter was not woken by the release after the restart (its lease lasts a minute)")
	}
}

// TestFirstUseCreatesTableOnce: many clients that start on a database
// without the table all succeed: the table is made once, under an
// advisory lock, rather than by racing CREATE statements that can fail.
func TestFirstUseCreatesTableOnce(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	table := uniqueTable()
	var wg sync.WaitGroup
	for i := range 16 {
		b := newBackend(t, pool, pglock.WithTable(table))
		wg.Go(func() {
			if _, err := dlock.New(b).TryAcquire(t.Context(), "k"+string(rune('a'+i))); err != nil {
				t.Errorf("first use %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	stats, err := dlock.New(newBackend(t, pool, pglock.WithTable(table))).Stats(t.Context())
	if err != nil || stats.Active != 16 {
		t.Errorf("Stats = %+v, %v; want 16 active", stats, err)
	}
}

// TestNewRejectsBadOptions: options that cannot work fail New with
// ErrInvalidOption rather than the first operation.
func TestNewRejectsBadOptions(t *testing.T) {
	pool := newPool(t, "postgres://nobody@127.0.0.1:1/none")
	for _, opts := range [][]pglock.Option{
		{pglock.WithTable("")},
		{pglock.WithTable("Locks")},
		{pglock.WithTable("a.b.c")},
		{pglock.WithTable("1abc")},
		{pglock.WithTable("drop table x; --")},
		{pglock.WithTable("abcdefghijklmnopqrstuvwxyz01234")},
		{pglock.WithTimeout(0)},
	} {
		if _, err := pglock.New(pool, opts...); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("New with %v: %v, want ErrInvalidOption", opts, err)
		}
	}
	if _, err := pglock.New(nil); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("New(nil): %v, want ErrInvalidOption", err)
	}
	if _, err := pglock.New(pool, pglock.WithTable("locks.dlock_2")); err != nil {
		t.Errorf("New with a schema-qualified table: %v", err)
	}
}

// connectWatcher reports each failed connection attempt of a pool.
type connectWatcher struct{ failed chan error }

func (w connectWatcher) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return ctx
}

func (connectWatcher) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (connectWatcher) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (w connectWatcher) TraceConnectEnd(_ context.Context, data pgx.TraceConnectEndData) {
	if data.Err != nil {
		select {
		case w.failed <- data.Err:
		default:
		}
	}
}

// TestServerFullWaitsForSlot: a server whose connection slots are all
// taken ("too many clients", as when a thousand dlock processes start at
// once) refuses the connection before anything is sent, so an operation
// waits for a slot instead of failing at once; a waiting Acquire waits on
// past half its TTL with a fresh start (a grant's validity runs from
// before the request, so one long wait would grant a lease nearly over);
// and the backend's own listening connection gives its slot up to a
// statement.
func TestServerFullWaitsForSlot(t *testing.T) {
	srv := testserver.StartPostgres(t)
	admin := newPool(t, srv.DSN())
	if _, err := admin.Exec(t.Context(), `CREATE ROLE locker LOGIN; GRANT CREATE ON SCHEMA public TO locker`); err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(srv.DSN(), "postgres@", "locker@", 1)
	for _, tc := range []struct {
		name    string
		slots   int  // the role's connection limit; one is taken
		listen  bool // the backend LISTENs on another before the hog comes
		acquire func(c *dlock.Client) (*dlock.Lock, error)
		// connections refused before the hog lets its slot go, or -1 to
		// keep it: the statement must find a slot while it is taken
		failures int
	}{
		{"TryAcquire waits", 1, false, func(c *dlock.Client) (*dlock.Lock, error) {
			return c.TryAcquire(t.Context(), "k")
		}, 1},
		// 33 refusals take 3 rounds of waiting 1s (half the TTL) for a
		// slot, more than the TTL: granted as of the first attempt, the
		// lease would be over.
		{"Acquire waits past its TTL", 1, false, func(c *dlock.Client) (*dlock.Lock, error) {
			return c.Acquire(t.Context(), "w", dlock.WithTTL(2*time.Second), dlock.WithMaxWait(time.Minute))
		}, 33},
		{"listening gives way", 2, true, func(c *dlock.Client) (*dlock.Lock, error) {
			return c.TryAcquire(t.Context(), "l")
		}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A closed connection's server process leaves a moment later;
			// until then it still takes one of the role's slots (CI once
			// refused the hog for an earlier case's connection).
			waitfor.Until(t, "the earlier cases' connections to end", func() bool {
				var n int
				err := admin.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE usename = 'locker'`).Scan(&n)
				return err == nil && n == 0
			})
			if _, err := admin.Exec(t.Context(), fmt.Sprintf(`ALTER ROLE locker CONNECTION LIMIT %d`, tc.slots)); err != nil {
				t.Fatal(err)
			}
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				t.Fatal(err)
			}
			w := connectWatcher{failed: make(chan error, 100)}
			cfg.ConnConfig.Tracer = w
			pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			b := newBackend(t, pool, pglock.WithTimeout(time.Minute))
			defer b.Close() // its listening connection may hold a slot
			if tc.listen {
				listen(t, b)
			}
			hog, err := pgx.Connect(t.Context(), dsn) // the last slot
			if err != nil {
				t.Fatal(err)
			}
			defer hog.Close(context.Background())

			type result struct {
				l   *dlock.Lock
				err error
			}
			done := make(chan result, 1)
			go func() {
				l, err := tc.acquire(dlock.New(b))
				done <- result{l, err}
			}()
			for range tc.failures {
				select {
				case err := <-w.failed:
					if !strings.Contains(err.Error(), "53300") {
						t.Fatalf("connection refused with %v, want SQLSTATE 53300", err)
					}
				case r := <-done:
					t.Fatalf("returned %v while the only slot was taken", r.err)
				}
			}
			if tc.failures >= 0 {
				if err := hog.Close(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			r := <-done
			if r.err != nil {
				t.Fatalf("acquire: %v", r.err)
			}
			if err := r.l.Err(); err != nil {
				t.Fatalf("the lock granted once a slot was free is already lost: %v", err)
			}
			if err := r.l.Release(t.Context()); err != nil {
				t.Fatalf("release: %v", err)
			}
		})
	}
}

// TestClosedPool: calls through a closed pool fail with ErrClosed, so that
// a waiting Acquire ends instead of waiting out what it would take for an
// outage.
func TestClosedPool(t *testing.T) {
	dsn := startPostgres(t)
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(newBackend(t, pool))
	l, err := c.TryAcquire(t.Context(), "job")
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := c.TryAcquire(t.Context(), "other"); !errors.Is(err, dlock.ErrClosed) || !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("TryAcquire through a closed pool: %v, want ErrClosed", err)
	}
	if err := l.Release(t.Context()); !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("Release through a closed pool: %v, want ErrClosed", err)
	}
}

// TestAcquireAfterClose: a closed backend listens for no release, so an
// Acquire that would have to wait fails with ErrClosed at once, where an
// outage would be waited out; one that finds its key free is granted.
func TestAcquireAfterClose(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	table := pglock.WithTable(uniqueTable())
	holder, err := dlock.New(newBackend(t, pool, table)).TryAcquire(t.Context(), "held")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(t.Context())
	closed := newBackend(t, pool, table)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	c := dlock.New(closed)
	if _, err := c.Acquire(t.Context(), "held", dlock.WithMaxWait(time.Minute)); !errors.Is(err, dlock.ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire of a held key after Close: %v, want ErrClosed at once", err)
	}
	l, err := c.Acquire(t.Context(), "free", dlock.WithMaxWait(time.Minute))
	if err != nil {
		t.Fatalf("Acquire of a free key after Close: %v", err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Error(err)
	}
}
