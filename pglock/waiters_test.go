package pglock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/pglock"
)

// Waiters in many processes: a release names the key's longest waiters,
// so only they look, not one waiter in every process. Each backend below
// has a pool and a listening connection of its own, as a process has.

// TestReleaseWakesNamedWaiters: 12 waiters, each in a backend of its own,
// take a held key in turn. Each hand-over costs the named waiters' looks
// (about two), where waking one waiter in every backend would cost one
// look per backend still waiting (78 for the 12 hand-overs). Once all are
// served, the key has no waiters left.
func TestReleaseWakesNamedWaiters(t *testing.T) {
	const procs = 12
	dsn := startPostgres(t)
	table := uniqueTable()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	holder, err := dlock.New(newBackend(t, newPool(t, dsn), pglock.WithTable(table))).
		TryAcquire(ctx, "job", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}

	var counts []*counter
	grants := make(chan *dlock.Lock, procs)
	for range procs {
		pool, count := countingPool(t, dsn)
		b := newBackend(t, pool, pglock.WithTable(table))
		listen(t, b)
		counts = append(counts, count)
		go func(ch <-chan *dlock.Lock) { grants <- <-ch }(dlocktest.StartWaiters(ctx, t, b, "job", 1, time.Hour))
	}
	looks := func() (n int64) {
		for _, c := range counts {
			n += c.acquires.Load()
		}
		return n
	}
	before := looks()
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range procs {
		l := <-grants
		if l == nil {
			t.Fatal("a waiter failed")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n := looks() - before
	t.Logf("acquire statements for %d hand-overs across %d backends: %d", procs, procs, n)
	if n > 3*procs {
		t.Errorf("%d acquire statements for %d hand-overs, want at most %d: waiters that were not named looked", n, procs, 3*procs)
	}
	if left := waiters(t, dsn, table, "job"); left != 0 {
		t.Errorf("%d waiters left after every waiter was served, want 0", left)
	}
}

// TestDeadHeadIsPassed: the longest waiter's process died without
// leaving (its row stays until its grace passes). A release names the
// next waiter too, which takes the key, rather than sleeping until the
// released lease would have ended, an hour away.
func TestDeadHeadIsPassed(t *testing.T) {
	dsn := startPostgres(t)
	table := uniqueTable()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	hb := newBackend(t, newPool(t, dsn), pglock.WithTable(table))
	holder, err := dlock.New(hb).TryAcquire(ctx, "job", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, dsn)
	if _, err := pool.Exec(ctx, `INSERT INTO `+table+`_waiters (key, waiter, since, until)
		VALUES ('job', 'ghost', now() - interval '1 minute', now() + interval '2 hours')`); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, pool, pglock.WithTable(table))
	listen(t, b)
	grants := dlocktest.StartWaiters(ctx, t, b, "job", 1, time.Hour)
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-grants:
		if l == nil {
			t.Fatal("the waiter failed")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("the waiter behind a dead head was not woken by the release")
	}
}

// TestWaiterThatGivesUpLeaves: a waiter whose wait ends leaves the key's
// waiters at once, so that releases do not name it.
func TestWaiterThatGivesUpLeaves(t *testing.T) {
	dsn := startPostgres(t)
	table := uniqueTable()
	b := newBackend(t, newPool(t, dsn), pglock.WithTable(table))
	c := dlock.New(b)
	if _, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	watched, waits := dlocktest.WatchWaits(b, 16)
	ctx, cancel := context.WithCancel(t.Context())
	var failed atomic.Value
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := dlock.New(watched).Acquire(ctx, "job")
		failed.Store(err)
	}()
	<-waits
	if n := waiters(t, dsn, table, "job"); n != 1 {
		t.Fatalf("%d waiters while one waits, want 1", n)
	}
	cancel()
	<-done
	if err, _ := failed.Load().(error); err == nil {
		t.Fatal("Acquire after its context ended succeeded")
	}
	waitfor.Until(t, "the waiter that gave up leaves", func() bool { return waiters(t, dsn, table, "job") == 0 })
}

// waiters counts key's rows in table's waiters.
func waiters(t *testing.T, dsn, table, key string) int {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM `+table+`_waiters WHERE key = $1`, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBackendsTakeTurns: a backend whose waiter is granted goes to the
// back of the line while its other waiters wait, so a waiter in another
// backend that came later is served before all of the first backend's
// waiters are.
func TestBackendsTakeTurns(t *testing.T) {
	dsn := startPostgres(t)
	table := uniqueTable()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	holder, err := dlock.New(newBackend(t, newPool(t, dsn), pglock.WithTable(table))).
		TryAcquire(ctx, "job", dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	first := newBackend(t, newPool(t, dsn), pglock.WithTable(table))
	listen(t, first)
	many := dlocktest.StartWaiters(ctx, t, first, "job", 3, time.Hour)
	second := newBackend(t, newPool(t, dsn), pglock.WithTable(table))
	listen(t, second)
	one := dlocktest.StartWaiters(ctx, t, second, "job", 1, time.Hour)
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for turn := 1; turn <= 4; turn++ {
		var l *dlock.Lock
		select {
		case l = <-many:
		case l = <-one:
			t.Logf("the later backend's waiter was served in turn %d of 4", turn)
			if turn == 4 {
				t.Error("the later backend's waiter was served only after all three of the first backend's")
			}
		case <-ctx.Done():
			t.Fatal("a waiter was not served")
		}
		if l == nil {
			t.Fatal("a waiter failed")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
