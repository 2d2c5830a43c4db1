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

// TestFIFODeadHeadIsSkipped: the waiter at the head of the queue died
// without leaving it (its ticket stays, deadline an hour away). A release
// names that head, so nobody else is woken by it; the living waiter behind
// must still get the key about one grace later, not when the holder's
// minute-long lease would have ended.
func TestFIFODeadHeadIsSkipped(t *testing.T) {
	ctx := t.Context()
	key := "dead-head"
	b, rdb, holder := newFIFOHeld(t, key)
	n := b.names(key)
	queueDeadWaiter(t, rdb, n)
	got := startWaiter(t, b, key) // it holds its ticket behind the dead one
	if c, err := rdb.ZCard(ctx, n.queue).Result(); err != nil || c != 2 {
		t.Fatalf("queue holds %d tickets (%v), want the dead one and the waiter's", c, err)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wantGrantedSoon(t, got, "the waiter behind a dead head (the holder's lease had a minute left)")
}

// fifoGrace is the grace of newFIFOBackend: short, so that the tests of a
// dead head take a fraction of a second.
const fifoGrace = 200 * time.Millisecond

// newFIFOBackend starts a server and returns a FIFO backend on it with
// fifoGrace, and its client.
func newFIFOBackend(t *testing.T) (*Backend, *redis.Client) {
	t.Helper()
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return fifoBackendOn(t, rdb), rdb
}

// newFIFOHeld is newFIFOBackend with key held for a minute by a client of
// the backend.
func newFIFOHeld(t *testing.T, key string) (*Backend, *redis.Client, *dlock.Lock) {
	t.Helper()
	b, rdb := newFIFOBackend(t)
	holder, err := dlock.New(b).TryAcquire(t.Context(), key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return b, rdb, holder
}

// fifoBackendOn returns a FIFO backend with fifoGrace on rdb, closed when t
// ends: another process, as far as the queue can tell.
func fifoBackendOn(t *testing.T, rdb *redis.Client) *Backend {
	t.Helper()
	b, err := New(rdb, WithFIFO(true), WithFIFOGrace(fifoGrace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// startWaiter starts an Acquire of key (a minute's TTL and up to 50s of
// waiting) that releases what it gets, and returns once it was refused
// while waiting (subscribed). The channel gets its outcome.
func startWaiter(t *testing.T, b *Backend, key string) <-chan error {
	t.Helper()
	ctx := t.Context()
	watched, denied := dlocktest.WatchDenials(b)
	got := make(chan error, 1)
	go func() {
		l, err := dlock.New(watched).Acquire(ctx, key, dlock.WithTTL(time.Minute), dlock.WithMaxWait(50*time.Second))
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	<-denied
	return got
}

// wantGrantedSoon fails unless the waiter of got was granted within 10s:
// far more than the grace, far less than the waiter's own timers.
func wantGrantedSoon(t *testing.T, got <-chan error, what string) {
	t.Helper()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not granted the key within 10s", what)
	}
}

// queueDeadWaiter puts the ticket of a waiter that died first in n's
// queue, valid for an hour.
func queueDeadWaiter(t *testing.T, rdb *redis.Client, n names) {
	t.Helper()
	queueTicket(t, rdb, n, "dead000000000000")
}

// queueTicket puts a ticket for lock id first in n's queue, valid for an
// hour, as an acquire of a waiter would.
func queueTicket(t *testing.T, rdb *redis.Client, n names, id string) {
	t.Helper()
	ctx := t.Context()
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, n.queue, redis.Z{Score: 1, Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, n.expiry, redis.Z{Score: float64(now.Add(time.Hour).UnixMilli()), Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestFIFOReleaseDropsItsTicket: an acquire that lands after its caller
// gave up can leave its token's ticket in the queue, where it would head
// the line for a waiter that will never come. The release that cleans up
// after that acquire drops the ticket from both sets.
func TestFIFOReleaseDropsItsTicket(t *testing.T) {
	ctx := t.Context()
	key := "release-drops-ticket"
	b, rdb, holder := newFIFOHeld(t, key)
	n := b.names(key)
	defer holder.Release(ctx)
	const token = "abandoned-acquire-token-0123456789"
	id := dlock.LockID(token)
	queueTicket(t, rdb, n, id)

	if err := b.Release(ctx, key, token); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("release of a token that never held the key: %v, want ErrNotHeld", err)
	}
	for _, set := range []string{n.queue, n.expiry} {
		if err := rdb.ZScore(ctx, set, id).Err(); !errors.Is(err, redis.Nil) {
			t.Errorf("the token's ticket is still in %s (%v)", set, err)
		}
	}
}

// TestFIFOFreeKeyBehindDeadHead: the key is free but promised to the head
// of the queue, a waiter that died. A waiter that arrives is told so; no
// release or grant will come, so its process must wake it once the head's
// place lapses (about one grace), not at its own safety-net timer a TTL
// (here a minute) later.
func TestFIFOFreeKeyBehindDeadHead(t *testing.T) {
	b, rdb := newFIFOBackend(t)
	key := "free-behind-dead-head"
	queueDeadWaiter(t, rdb, b.names(key))
	got := startWaiter(t, b, key) // told that the key waits for the dead head
	wantGrantedSoon(t, got, "the waiter on a free key behind a dead head (its own timer was a minute away)")
}

// TestFIFODeadHolderAndNextInLine: the holder dies, and so does the next
// in line, the one waiter that watches the lease (as when one process held
// the key and also waited first in line). Nobody will announce anything,
// so the process of the waiter behind must make it look a grace after the
// lease ends, not at its own timer a TTL (here a minute) later.
func TestFIFODeadHolderAndNextInLine(t *testing.T) {
	b, rdb := newFIFOBackend(t)
	behind := fifoBackendOn(t, rdb)
	key := "dead-holder-and-next"
	if _, err := dlock.New(b).TryAcquire(t.Context(), key, dlock.WithTTL(time.Second)); err != nil {
		t.Fatal(err) // and never released
	}
	queueDeadWaiter(t, rdb, b.names(key))
	got := startWaiter(t, behind, key) // second in line
	wantGrantedSoon(t, got, "the waiter behind a dead holder and a dead next in line")
}

// TestFIFOFailedReleaseKeepsHeadsPlace: a release whose token does not
// hold the key (the cleanup of an abandoned acquire) frees nothing, so it
// must not give the head of the queue less time to come.
func TestFIFOFailedReleaseKeepsHeadsPlace(t *testing.T) {
	ctx := t.Context()
	key := "failed-release"
	b, rdb, holder := newFIFOHeld(t, key)
	n := b.names(key)
	defer holder.Release(ctx)
	watched, denied := dlocktest.WatchDenials(b)
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = dlock.New(watched).Acquire(waitCtx, key) }()
	<-denied // the waiter holds its ticket: the head of the queue
	ids, err := rdb.ZRange(ctx, n.queue, 0, 0).Result()
	if err != nil || len(ids) != 1 {
		t.Fatalf("queue head: %v, %v", ids, err)
	}
	before := rdb.ZScore(ctx, n.expiry, ids[0]).Val()

	if err := b.Release(ctx, key, "not-the-holders-token-0123456789"); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("release with another token: %v, want ErrNotHeld", err)
	}
	if after := rdb.ZScore(ctx, n.expiry, ids[0]).Val(); after != before {
		t.Errorf("a release that freed nothing moved the head's deadline from %v to %v", before, after)
	}
}
