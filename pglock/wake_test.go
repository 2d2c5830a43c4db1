package pglock_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/pglock"
)

// counter counts the acquire statements a pool sends to the server.
type counter struct{ acquires atomic.Int64 }

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "INSERT INTO") && strings.Contains(data.SQL, "nextval") {
		c.acquires.Add(1)
	}
	return ctx
}

func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countingPool is newPool with a counter of its acquire statements.
func countingPool(t *testing.T, dsn string) (*pgxpool.Pool, *counter) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	cfg.ConnConfig.Tracer = c
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, c
}

// TestWakeUpWithoutPolling: 32 waiters on a held key send no statement
// while it is held (each sleeps until a NOTIFY or the holder's expiry, a
// minute away), and each release hands the key on to one of them.
func TestWakeUpWithoutPolling(t *testing.T) {
	const waiters = 32
	pool, count := countingPool(t, startPostgres(t))
	b := newBackend(t, pool)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	listen(t, b)
	holder, err := dlock.New(b).TryAcquire(ctx, "job", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	grants := dlocktest.StartWaiters(ctx, t, b, "job", waiters, time.Minute)

	// A polling waiter with the default backoff (at most 100ms) would
	// make 32*3 attempts in this time.
	before := count.acquires.Load()
	time.Sleep(300 * time.Millisecond)
	if n := count.acquires.Load() - before; n != 0 {
		t.Errorf("%d acquire statements while the key was held and nothing changed, want 0", n)
	}

	start := count.acquires.Load()
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range waiters {
		l := <-grants
		if l == nil {
			t.Fatal("a waiter failed")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Each release wakes one waiter, which takes the key: one statement
	// a grant. A herd (every waiter woken by every release) would make
	// about waiters/2 a grant.
	n := count.acquires.Load() - start
	t.Logf("acquire statements for %d hand-overs: %d (%.1f a grant)", waiters, n, float64(n)/waiters)
	if n > 2*waiters {
		t.Errorf("%d acquire statements for %d hand-overs, want at most %d", n, waiters, 2*waiters)
	}
}

// listen starts b's listening connection and waits until it listens, so
// that a test starts from the steady state: waiters that came before it
// listened are woken once it does, to look again. It stays subscribed
// until the test ends, so that the connection stays.
func listen(t *testing.T, b *pglock.Backend) {
	t.Helper()
	_, cancel, err := b.Subscribe(t.Context(), "warm-up")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	waitfor.Until(t, "the backend LISTENs", func() bool { return pglock.Listening(b) })
}

// TestListeningEndsWithTheWait: the connection that listened for a
// waiter is closed once nobody in the process waits (after a linger), so
// that a holder that had to wait keeps one connection, not two.
func TestListeningEndsWithTheWait(t *testing.T) {
	b := newBackend(t, newPool(t, startPostgres(t)))
	pglock.SetLinger(b, 10*time.Millisecond)
	c := dlock.New(b)
	holder, err := c.TryAcquire(t.Context(), "k", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *dlock.Lock
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := c.Acquire(t.Context(), "k", dlock.WithMaxWait(time.Minute))
		got <- result{l, err}
	}()
	waitfor.Until(t, "the waiter's backend LISTENs", func() bool { return pglock.Listening(b) })
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	waitfor.Until(t, "the listening connection closes once nobody waits", func() bool { return !pglock.Listening(b) })
	if err := r.l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}
