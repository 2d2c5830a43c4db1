package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/redislock"
)

// patience bounds waits for things that must happen, so that a broken
// backend fails a test instead of hanging it. It is not a timing claim.
const patience = 20 * time.Second

type grant struct {
	waiter int
	lock   *dlock.Lock
	err    error
}

// TestWakeUpWithoutPolling holds a key while 32 waiters block on it and
// counts the scripts the server runs: none while the key is held (nobody
// polls), and from the release to the next grant only the release, the
// grant and at most one look by a waiter that did not win: a release wakes
// one waiter, not all 32. All waiters share one pub/sub connection.
func TestWakeUpWithoutPolling(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("fifo=%v", fifo), func(t *testing.T) {
			const waiters = 32
			srv := startRedis(t)
			stats := newClient(t, srv.Addr) // for INFO; its own calls are not scripts
			b := newBackend(t, newClient(t, srv.Addr), redislock.WithFIFO(fifo))
			watched := watchDenials(b)
			ctx := t.Context()
			key := uniqueKey(t, "contended")

			holder, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			grants := make(chan grant, waiters)
			for i := range waiters {
				go func() {
					l, err := dlock.New(watched).Acquire(ctx, key, dlock.WithTTL(time.Minute), dlock.WithMaxWait(patience))
					grants <- grant{i, l, err}
				}()
				// One at a time, so that the FIFO order is the start order.
				select {
				case <-watched.denied:
				case <-time.After(patience):
					t.Fatalf("waiter %d never tried the key", i)
				}
			}
			if n := pubsubConns(t, stats); n != 1 {
				t.Errorf("%d pub/sub connections for %d waiters, want 1", n, waiters)
			}

			// While the key is held, nobody asks for it. A polling waiter
			// with the default backoff (at most 100ms) would make 32*3
			// attempts in this time.
			before := scriptCalls(commandCalls(t, stats))
			time.Sleep(300 * time.Millisecond)
			during := scriptCalls(commandCalls(t, stats)) - before
			if during != 0 {
				t.Errorf("%d script calls while the key was held and nothing changed, want 0", during)
			}

			before = scriptCalls(commandCalls(t, stats))
			if err := holder.Release(ctx); err != nil {
				t.Fatal(err)
			}
			var first grant
			select {
			case first = <-grants:
			case <-time.After(patience):
				t.Fatal("no waiter was granted the key after the release")
			}
			if first.err != nil {
				t.Fatalf("waiter %d: %v", first.waiter, first.err)
			}
			afterRelease := scriptCalls(commandCalls(t, stats)) - before
			t.Logf("script calls from release to next grant: %d (%d waiters)", afterRelease, waiters)
			if limit := 4; afterRelease > limit {
				t.Errorf("%d script calls from the release to the next grant, want at most %d", afterRelease, limit)
			}
			if fifo && first.waiter != 0 {
				t.Errorf("FIFO: waiter %d got the key first, want waiter 0", first.waiter)
			}

			// Pass the key along; with FIFO the order is the arrival order.
			order := []int{first.waiter}
			if err := first.lock.Release(ctx); err != nil {
				t.Fatal(err)
			}
			for range waiters - 1 {
				select {
				case g := <-grants:
					if g.err != nil {
						t.Fatalf("waiter %d: %v", g.waiter, g.err)
					}
					order = append(order, g.waiter)
					if err := g.lock.Release(ctx); err != nil {
						t.Fatal(err)
					}
				case <-time.After(patience):
					t.Fatalf("only %d of %d waiters were granted the key", len(order), waiters)
				}
			}
			if fifo && !slices.IsSorted(order) {
				t.Errorf("FIFO grant order %v, want arrival order", order)
			}
		})
	}
}

// TestFIFOCancelledWaiterLeavesQueue checks that a waiter whose context
// ends leaves the queue at once: the one behind it is granted on the
// release, not when the cancelled waiter's ticket would have lapsed (a
// minute later here).
func TestFIFOCancelledWaiterLeavesQueue(t *testing.T) {
	srv := startRedis(t)
	b := newBackend(t, newClient(t, srv.Addr), redislock.WithFIFO(true), redislock.WithFIFOGrace(time.Minute))
	watched := watchDenials(b)
	ctx := t.Context()
	key := uniqueKey(t, "queue")
	holder, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}

	start := func(ctx context.Context, i int) <-chan grant {
		done := make(chan grant, 1)
		go func() {
			l, err := dlock.New(watched).Acquire(ctx, key, dlock.WithTTL(time.Minute))
			done <- grant{i, l, err}
		}()
		select {
		case <-watched.denied:
		case <-time.After(patience):
			t.Fatalf("waiter %d never tried the key", i)
		}
		return done
	}
	firstCtx, cancelFirst := context.WithCancel(ctx)
	first := start(firstCtx, 0)
	second := start(ctx, 1)

	// A TryAcquire neither jumps the queue nor joins it.
	if _, err := dlock.New(b).TryAcquire(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire on a held key: %v", err)
	}

	cancelFirst()
	if g := <-first; !errors.Is(g.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v, want context.Canceled", g.err)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-second:
		if g.err != nil {
			t.Fatalf("second waiter: %v", g.err)
		}
		_ = g.lock.Release(ctx)
	case <-time.After(patience):
		t.Fatal("the waiter behind a cancelled one was not granted the key")
	}
	// The queue is empty again: a one-shot attempt wins.
	l, err := dlock.New(b).TryAcquire(ctx, key)
	if err != nil {
		t.Fatalf("TryAcquire with an empty queue: %v", err)
	}
	_ = l.Release(ctx)
}

// TestFIFOQueueBlocksBargers checks that with waiters queued, a free key is
// not granted to a one-shot caller, and that the denial names the next in
// line.
func TestFIFOQueueBlocksBargers(t *testing.T) {
	srv := startRedis(t)
	rdb := newClient(t, srv.Addr)
	// The waiter's backend is separate, so that releasing the holder on
	// it cannot be observed before the waiter is woken.
	waiterB := newBackend(t, newClient(t, srv.Addr), redislock.WithFIFO(true))
	b := newBackend(t, rdb, redislock.WithFIFO(true))
	watched := watchDenials(waiterB)
	ctx := t.Context()
	key := uniqueKey(t, "barge")
	holder, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan grant, 1)
	waiterCtx, stopWaiter := context.WithCancel(ctx)
	defer stopWaiter()
	go func() {
		l, err := dlock.New(watched).Acquire(waiterCtx, key)
		done <- grant{0, l, err}
	}()
	var waiterID string
	select {
	case waiterID = <-watched.denied:
	case <-time.After(patience):
		t.Fatal("waiter never tried the key")
	}
	// Free the key behind the waiter's back: a raw DEL wakes nobody.
	if err := rdb.Del(ctx, b.Prefix()+key).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = dlock.New(b).TryAcquire(ctx, key)
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) || nae.Holder == nil {
		t.Fatalf("TryAcquire of a free key with a queued waiter: %v, want NotAcquiredError", err)
	}
	if nae.Holder.LockID != waiterID {
		t.Errorf("denial names %q, want the queued waiter %q", nae.Holder.LockID, waiterID)
	}
	_ = holder
	stopWaiter()
	if g := <-done; !errors.Is(g.err, context.Canceled) {
		t.Fatalf("waiter: %v", g.err)
	}
}
