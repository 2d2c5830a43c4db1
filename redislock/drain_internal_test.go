package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// pauseWrites makes the server hold every script (CLIENT PAUSE WRITE)
// until the returned function, also run when t ends, lets them go on.
func pauseWrites(t *testing.T, rdb *redis.Client) (unpause func()) {
	t.Helper()
	if err := rdb.Do(t.Context(), "CLIENT", "PAUSE", 60000, "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	unpause = func() {
		if err := rdb.Do(context.Background(), "CLIENT", "UNPAUSE").Err(); err != nil {
			t.Errorf("CLIENT UNPAUSE: %v", err)
		}
	}
	t.Cleanup(unpause)
	return unpause
}

// wantDrainBusy fails unless Drain, given 50ms, says work still runs.
func wantDrainBusy(t *testing.T, b *Backend, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := b.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain while %s = %v, want context.DeadlineExceeded: it did not wait", what, err)
	}
}

// TestDrainWaitsForLateRelease: with a client that does not end calls at
// their deadline, an acquire whose caller left goes on in the background.
// Drain waits for it and for the release of the grant that lands late, so
// that a program that drains before it exits leaves the key free.
func TestDrainWaitsForLateRelease(t *testing.T) {
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr}) // not deadline-aware
	t.Cleanup(func() { _ = rdb.Close() })
	b, err := New(rdb, WithPrefix("drain:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	// Load the scripts: a call whose context ended sends no EVAL after a
	// NOSCRIPT, so nothing would land late.
	warm := acquireRequest("warm-up")
	if _, ok, err := b.Acquire(t.Context(), warm); err != nil || !ok {
		t.Fatalf("warm-up acquire: granted %v, %v", ok, err)
	}
	if err := b.Release(t.Context(), warm.Key, warm.Token); err != nil {
		t.Fatal(err)
	}
	req := acquireRequest("late")

	unpause := pauseWrites(t, rdb)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	_, _, err = b.Acquire(ctx, req)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a paused server: %v, want context.DeadlineExceeded", err)
	}
	wantDrainBusy(t, b, "the acquire is held by the server")
	unpause()
	if err := b.Drain(t.Context()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if rec, found, err := b.Inspect(t.Context(), req.Key); err != nil || found {
		t.Errorf("after Drain: %+v found %v, %v; want the late grant released", rec, found, err)
	}
}

// TestDrainWaitsForTicketDrop: a FIFO waiter whose context ends leaves the
// queue in the background; Drain waits until it has, so that a program
// that drains before it exits does not leave its ticket at the head of the
// queue, where the next waiter would wait a grace for it. The client is
// deadline-aware, so the drop's script runs on the goroutine that
// context.AfterFunc started, counted by nothing else.
func TestDrainWaitsForTicketDrop(t *testing.T) {
	ctx := t.Context()
	key := "drain-ticket"
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	b := fifoBackendOn(t, rdb)
	if !b.direct {
		t.Fatal("the backend runs calls on goroutines of their own; want them on the caller's")
	}
	holder, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(ctx)
	watched, denied := dlocktest.WatchDenials(b)
	waitCtx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := dlock.New(watched).Acquire(waitCtx, key)
		gaveUp <- err
	}()
	<-denied // the waiter holds its ticket

	unpause := pauseWrites(t, rdb)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter: %v, want context.Canceled", err)
	}
	wantDrainBusy(t, b, "the ticket's drop is held by the server")
	unpause()
	if err := b.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if n, err := rdb.ZCard(ctx, b.names(key).queue).Result(); err != nil || n != 0 {
		t.Errorf("after Drain the queue holds %d tickets (%v), want none", n, err)
	}
}
