package pglock_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
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
	c := dlock.New(b)
	held, err := c.TryAcquire(t.Context(), "down")
	if err != nil {
		t.Fatal(err)
	}
	watched, err := c.TryAcquire(t.Context(), "watched", dlock.WithTTL(time.Second), dlock.WithAutoRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	dlocktest.CheckStoreDown(t, c, held, watched, within)
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
// once) refuses the connection before anything is sent, so the operation
// waits for a slot within its timeout instead of failing at once.
func TestServerFullWaitsForSlot(t *testing.T) {
	srv := testserver.StartPostgres(t)
	admin := newPool(t, srv.DSN())
	for _, q := range []string{
		`CREATE ROLE locker LOGIN CONNECTION LIMIT 1`,
		`GRANT CREATE ON SCHEMA public TO locker`,
	} {
		if _, err := admin.Exec(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	dsn := strings.Replace(srv.DSN(), "postgres@", "locker@", 1)
	hog, err := pgx.Connect(t.Context(), dsn) // the role's one slot
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	w := connectWatcher{failed: make(chan error, 1)}
	cfg.ConnConfig.Tracer = w
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b := newBackend(t, pool, pglock.WithTimeout(time.Minute))

	done := make(chan error, 1)
	go func() {
		_, err := dlock.New(b).TryAcquire(t.Context(), "k")
		done <- err
	}()
	select {
	case err := <-w.failed:
		if !strings.Contains(err.Error(), "53300") {
			t.Fatalf("connection refused with %v, want SQLSTATE 53300", err)
		}
	case err := <-done:
		t.Fatalf("TryAcquire returned %v while the only slot was taken", err)
	}
	if err := hog.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("TryAcquire once a slot was free: %v", err)
	}
}
