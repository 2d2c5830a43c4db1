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

	firstCtx, cancelFirst := context.WithCancel(ctx)
	first := startFIFOWaiter(t, firstCtx, watched, key, 0, dlock.WithTTL(time.Minute))
	second := startFIFOWaiter(t, ctx, watched, key, 1, dlock.WithTTL(time.Minute))

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

// TestFIFONoLooksWhileHeld: with FIFO, waiters make no request while the
// key is held, however long it is held and whichever process the head of
// the queue waits in. Two backends stand for two processes, with waiters
// queued on each in turn; every holder keeps the key for three graces, so
// a waiter that looked again after a grace, for a head that had come,
// would show, and the last waits longer than a lease (2s), so a waiter
// that looked when the lease it saw ended would show too. The first holder
// asks again at once after its release, while the key waits for the head:
// it too waits for its turn without looking.
func TestFIFONoLooksWhileHeld(t *testing.T) {
	const grace = 250 * time.Millisecond
	srv := startRedis(t)
	stats := newClient(t, srv.Addr)
	var watched [2]*denials
	for i := range watched {
		watched[i] = watchDenials(newBackend(t, newClient(t, srv.Addr), redislock.WithFIFO(true), redislock.WithFIFOGrace(grace)))
	}
	ctx := t.Context()
	key := uniqueKey(t, "long-holds")
	opts := []dlock.Option{dlock.WithTTL(2 * time.Second), dlock.WithMaxWait(patience)}

	// Load the release script now: a first EVALSHA that misses the script
	// cache counts twice (EVALSHA, then EVAL).
	warm, err := dlock.New(watched[0]).TryAcquire(ctx, uniqueKey(t, "warm-up"))
	if err != nil {
		t.Fatal(err)
	}
	if err := warm.Release(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := dlock.New(watched[0]).TryAcquire(ctx, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	grants := make(chan grant, waiters+1)
	// acquire starts waiter i on backend i%2 and returns once it was
	// refused, so that the queue order is the start order.
	acquire := func(i int) {
		d := watched[i%2]
		go func() {
			l, err := dlock.New(d).Acquire(ctx, key, opts...)
			grants <- grant{i, l, err}
		}()
		select {
		case <-d.denied:
		case <-time.After(patience):
			t.Fatalf("waiter %d never tried the key", i)
		}
	}
	for i := range waiters {
		acquire(i)
	}

	before := scriptCalls(commandCalls(t, stats))
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	acquire(waiters) // the first holder again, on the same backend, last in line
	var order []int
	for range waiters + 1 {
		select {
		case g := <-grants:
			if g.err != nil {
				t.Fatalf("waiter %d: %v", g.waiter, g.err)
			}
			order = append(order, g.waiter)
			time.Sleep(3 * grace) // the critical section outlasts the grace
			if err := g.lock.Release(ctx); err != nil {
				t.Fatal(err)
			}
		case <-time.After(patience):
			t.Fatalf("only %d of %d waiters were granted the key", len(order), waiters+1)
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("grant order %v, want arrival order", order)
	}
	if looks := len(watched[0].denied) + len(watched[1].denied); looks != 0 {
		t.Errorf("waiters looked at the held key %d times, want 0", looks)
	}
	// The first release, the late arrival's attempt, and for each waiter
	// its grant and its release. The late arrival subscribes after its
	// refusal, to a live subscription, and looks again at once only if its
	// process heard something meanwhile (here maybe the first release).
	calls, want := scriptCalls(commandCalls(t, stats))-before, 2+2*(waiters+1)
	t.Logf("%d script calls from the first release on", calls)
	if calls != want && calls != want+1 {
		t.Errorf("%d script calls from the first release on, want %d (or %d)", calls, want, want+1)
	}
}

// startFIFOWaiter starts a waiting Acquire of key through d and returns
// once it was refused while waiting (subscribed), so that waiters started
// one after another queue in that order.
func startFIFOWaiter(t *testing.T, ctx context.Context, d *denials, key string, i int, opts ...dlock.Option) <-chan grant {
	t.Helper()
	done := make(chan grant, 1)
	go func() {
		l, err := dlock.New(d).Acquire(ctx, key, append(opts, dlock.WithMaxWait(patience))...)
		done <- grant{i, l, err}
	}()
	select {
	case <-d.denied:
	case <-time.After(patience):
		t.Fatalf("waiter %d never tried the key", i)
	}
	return done
}

// wantGrantWithin fails unless g delivers a grant within d, which bounds
// how late a waiter may look; it is far below the waiter's own timer.
func wantGrantWithin(t *testing.T, g <-chan grant, d time.Duration, what string) *dlock.Lock {
	t.Helper()
	select {
	case r := <-g:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.lock
	case <-time.After(d):
		t.Fatalf("%s: no grant within %v", what, d)
	}
	return nil
}

// deadFIFOHolder starts a server with two FIFO backends on it (two
// processes, in effect), takes a key on the first with ttl and never
// releases it, as a holder that died would.
func deadFIFOHolder(t *testing.T, ttl dlock.Option) (a, b *denials, key string) {
	t.Helper()
	srv := startRedis(t)
	opt := redislock.WithFIFO(true)
	a = watchDenials(newBackend(t, newClient(t, srv.Addr), opt))
	b = watchDenials(newBackend(t, newClient(t, srv.Addr), opt))
	key = uniqueKey(t, "dead-holder")
	if _, err := dlock.New(a).TryAcquire(t.Context(), key, ttl); err != nil {
		t.Fatal(err)
	}
	return a, b, key
}

// TestFIFONextInLineWatchesLease: with FIFO only the first in line looks
// at the key when a lease ends; the others rely on being told when their
// turn comes. Holders that die without releasing publish nothing: here the
// holder and then the waiter granted after it just stop, and the waiter
// behind, whose own timer is a minute away, must still get the key once
// the second lease ends. Waiters and holder are on two backends.
func TestFIFONextInLineWatchesLease(t *testing.T) {
	short := dlock.WithTTL(300 * time.Millisecond)
	a, b, key := deadFIFOHolder(t, short)
	ctx := t.Context()
	first := startFIFOWaiter(t, ctx, b, key, 0, short)
	second := startFIFOWaiter(t, ctx, a, key, 1, dlock.WithTTL(time.Minute))
	wantGrantWithin(t, first, 10*time.Second, "first in line, at the dead holder's expiry") // and never released
	l := wantGrantWithin(t, second, 10*time.Second, "second in line, at the dead first waiter's expiry")
	_ = l.Release(ctx)
}

// TestFIFOLeavingHeadHandsOnTheWatch: the first in line gives up while the
// key is held by a holder that then dies; the waiter behind it must look
// when that lease ends, not at its own timer a minute later.
func TestFIFOLeavingHeadHandsOnTheWatch(t *testing.T) {
	a, b, key := deadFIFOHolder(t, dlock.WithTTL(time.Second))
	ctx := t.Context()
	headCtx, leave := context.WithCancel(ctx)
	head := startFIFOWaiter(t, headCtx, a, key, 0)
	behind := startFIFOWaiter(t, ctx, b, key, 1, dlock.WithTTL(time.Minute))
	leave()
	if g := <-head; !errors.Is(g.err, context.Canceled) {
		t.Fatalf("the head that gave up: %v", g.err)
	}
	l := wantGrantWithin(t, behind, 10*time.Second, "the waiter behind a head that left, at the holder's expiry")
	_ = l.Release(ctx)
}

// TestFIFOLongHoldOnlyFirstInLineLooks: a holder keeps the key for several
// of its leases, refreshing. The first in line looks as each lease it was
// told of ends and, finding the key held, says so; the waiter behind it, in
// another process, which would look in its stead a grace after a lease
// ended in silence (in case the first in line died), does not look.
func TestFIFOLongHoldOnlyFirstInLineLooks(t *testing.T) {
	const grace = time.Second // far above the first in line's delay in looking
	srv := startRedis(t)
	var watched [2]*denials
	for i := range watched {
		watched[i] = watchDenials(newBackend(t, newClient(t, srv.Addr), redislock.WithFIFO(true), redislock.WithFIFOGrace(grace)))
	}
	ctx := t.Context()
	key := uniqueKey(t, "long-hold")
	ttl := dlock.WithTTL(500 * time.Millisecond)
	holder, err := dlock.New(watched[0]).TryAcquire(ctx, key, ttl, dlock.WithAutoRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	first := startFIFOWaiter(t, ctx, watched[0], key, 0, ttl)
	// A lease of a minute puts the second's own timer (a lease of its TTL
	// per waiter ahead, past the lease it saw) out of the test's way.
	second := startFIFOWaiter(t, ctx, watched[1], key, 1, dlock.WithTTL(time.Minute))
	for look := range 4 { // four leases end while the key is held
		select {
		case <-watched[0].denied:
		case <-time.After(patience):
			t.Fatalf("the first in line did not look after lease %d ended", look+1)
		}
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wantGrantWithin(t, first, patience, "first in line").Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := wantGrantWithin(t, second, patience, "second in line").Release(ctx); err != nil {
		t.Fatal(err)
	}
	if looks := len(watched[1].denied); looks != 0 {
		t.Errorf("the waiter behind the first in line looked %d times while the key was held, want 0", looks)
	}
}

// TestLeaseEndOneLookPerProcess: without FIFO, a holder keeps the key
// through several of its leases, refreshing. When a lease the waiters were
// told of ends, one waiter per process looks (a holder that died would
// publish nothing), not every waiter: four waiters in one process look
// about as often as the one waiter in another.
func TestLeaseEndOneLookPerProcess(t *testing.T) {
	srv := startRedis(t)
	many := watchDenials(newBackend(t, newClient(t, srv.Addr)))
	one := watchDenials(newBackend(t, newClient(t, srv.Addr)))
	ctx := t.Context()
	key := uniqueKey(t, "long-hold")
	ttl := dlock.WithTTL(300 * time.Millisecond)
	holder, err := dlock.New(many).TryAcquire(ctx, key, ttl, dlock.WithAutoRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	// Their own leases are a minute: only lease ends and releases wake them.
	long := dlock.WithTTL(time.Minute)
	var waiters []<-chan grant
	for i := range 4 {
		waiters = append(waiters, startFIFOWaiter(t, ctx, many, key, i, long))
	}
	waiters = append(waiters, startFIFOWaiter(t, ctx, one, key, 4, long))
	for look := range 6 { // six lease ends seen by the single waiter
		select {
		case <-one.denied:
		case <-time.After(patience):
			t.Fatalf("the single waiter did not look after lease %d ended", look+1)
		}
	}
	manyLooks, oneLooks := len(many.denied), 6
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	granted := make(chan grant, len(waiters)) // in whatever order they come
	for _, g := range waiters {
		go func() { granted <- <-g }()
	}
	for range waiters {
		if err := wantGrantWithin(t, granted, patience, "a waiter").Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Each process looks once per lease end it sees; the two see the same
	// leases, give or take the one in flight when counting stopped.
	t.Logf("looks while held: %d by four waiters in one process, %d by one in another", manyLooks, oneLooks)
	if manyLooks > oneLooks+2 {
		t.Errorf("four waiters in one process looked %d times while one elsewhere looked %d: want one look per process per lease end", manyLooks, oneLooks)
	}
}
