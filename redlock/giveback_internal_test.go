package redlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/waitfor"
)

// A grant whose quorum could not be raised to one fence fails, and the
// share of a master that answered only after the quorum (its acquire held
// in the server by CLIENT PAUSE past the master timeout) is given back
// when it lands, by the backend itself: this calls the backend directly,
// without the core's give-back of a failed acquire (which would free it
// too, as a Release made again until it is answered). Master 0 counted one
// grant of the key before, so the quorum of masters 0 and 1 disagrees on
// the fence, and master 1 is paused as it is about to be raised.
func TestLateShareGivenBackAfterFailedGrant(t *testing.T) {
	_, clients := masters(t)
	// Master 2's client does not end calls at their deadline, so that its
	// acquire goes on past the master timeout and lands once unpaused (a
	// deadline-aware client would drop the connection, and the script
	// with it).
	slow := redis.NewClient(&redis.Options{Addr: clients[2].Options().Addr})
	t.Cleanup(func() { _ = slow.Close() })
	b, err := New([]redis.UniversalClient{clients[0], clients[1], slow}, WithMasterTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	const key = "k"
	// Count one grant on master 0, and load the scripts everywhere: a call
	// whose context ended sends no EVAL after a NOSCRIPT.
	warm := take(t, b, 0, key, "00000000000000000000000000000000", time.Minute)
	if err := b.nodes[0].Release(ctx, key, warm.Token); err != nil {
		t.Fatal(err)
	}
	l, err := dlock.New(b).TryAcquire(ctx, "warm-up")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	pause := func(i int) {
		if err := clients[i].Do(ctx, "CLIENT", "PAUSE", 60000, "WRITE").Err(); err != nil {
			t.Error(err)
		}
	}
	unpause := func(i int) { _ = clients[i].Do(context.Background(), "CLIENT", "UNPAUSE").Err() }
	for i := 1; i < 3; i++ {
		t.Cleanup(func() { unpause(i) })
	}
	pause(2)
	testHookRaise = func() { pause(1) }
	t.Cleanup(func() { testHookRaise = nil })

	token := "11111111111111111111111111111111"
	req := dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Hour}
	if _, granted, err := b.Acquire(ctx, req); granted || !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("Acquire whose fences could not be raised = %v, %v; want not granted, ErrUnavailable", granted, err)
	}
	if err := b.inflight.Wait(ctx); err != nil { // master 2's call has given up
		t.Fatal(err)
	}
	unpause(1)
	unpause(2)
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, "the give-backs made again to finish", func() bool { return Retrying(b) == 0 })
	// Master 1's give-back, sent while it was paused, was not answered and
	// is not made again by the backend (see giveBack): the core's
	// give-back of the failed acquire frees it. Masters 0 and 2 are free.
	for _, i := range []int{0, 2} {
		if rec, found, err := b.nodes[i].Inspect(ctx, key); err != nil || found {
			t.Errorf("master %d after the failed grant: %+v found %v, %v; want the key free", i, rec, found, err)
		}
	}
}
