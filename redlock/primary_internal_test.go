package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/bench"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// masters starts three redis-servers and returns a backend over them
// (with opts) and a plain client on each.
func masters(t *testing.T, opts ...Option) (*Backend, []*redis.Client) {
	t.Helper()
	var clients []redis.UniversalClient
	var direct []*redis.Client
	for range 3 {
		c := redis.NewClient(&redis.Options{Addr: testserver.StartRedis(t).Addr, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		clients, direct = append(clients, c), append(direct, c)
	}
	b, err := New(clients, append([]Option{WithPrefix("t:")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, direct
}

// take puts a lease of token on master i alone, as a contender's share.
func take(t *testing.T, b *Backend, i int, key, token string, ttl time.Duration) dlock.AcquireRequest {
	t.Helper()
	req := dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: ttl}
	if _, ok, err := b.nodes[i].Acquire(t.Context(), req); err != nil || !ok {
		t.Fatalf("lease on master %d: granted %v, %v", i, ok, err)
	}
	return req
}

// A split vote: the acquire gets only the key's primary master; the two
// others are held by two other contenders, one of whose shares lapses
// 10 ms later. Holding the primary, it asks the others again (for 15 ms
// and more) and is granted once that share is gone, instead of giving up.
func TestSplitVoteWonByPrimaryHolder(t *testing.T) {
	b, _ := masters(t)
	const key = "k"
	primary := b.primary(key)
	others := []int{(primary + 1) % 3, (primary + 2) % 3}
	take(t, b, others[0], key, "11111111111111111111111111111111", 10*time.Millisecond)
	take(t, b, others[1], key, "22222222222222222222222222222222", time.Minute)
	l, err := dlock.New(b, dlock.WithTTL(time.Minute)).TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("TryAcquire holding the primary while a rival share lapses: %v", err)
	}
	_ = l.Release(t.Context())
}

// A holder with a quorum that lacks the key's primary master (it took the
// key while the primary was down or had lost its data): an acquire that
// gets the primary is refused at once, naming that holder, and gives the
// primary back without waking anybody (no PUBLISH), since the holder's
// release will. Waking the waiters for the give-back set them racing again
// for as long as the holder held the key.
func TestQuorumWithoutPrimaryWakesNobody(t *testing.T) {
	ctx := t.Context()
	b, direct := masters(t)
	const key, token = "k", "0123456789abcdef0123456789abcdef"
	primary := b.primary(key)
	var holder dlock.AcquireRequest
	for i := range b.nodes {
		if i != primary {
			holder = take(t, b, i, key, token, time.Minute)
		}
	}
	publishes := func() int { return publishCalls(t, direct[primary]) }
	before := publishes()
	_, err := dlock.New(b, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key)
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) || nae.Holder == nil || nae.Holder.LockID != holder.LockID {
		t.Fatalf("TryAcquire = %v; want refused, naming the quorum's holder %s", err, holder.LockID)
	}
	if n := publishes() - before; n != 0 {
		t.Errorf("the give-back of the primary published %d times, want 0", n)
	}
	if _, found, err := b.nodes[primary].Inspect(ctx, key); err != nil || found {
		t.Errorf("primary after the refusal: found %v, %v; want it given back", found, err)
	}
}

// publishCalls is how many PUBLISH commands c's server has run.
func publishCalls(t *testing.T, c *redis.Client) int { return commandCalls(t, c, "publish") }

// scriptCalls is how many scripts (EVALSHA and EVAL) c's server has run.
func scriptCalls(t *testing.T, c *redis.Client) int { return commandCalls(t, c, "evalsha", "eval") }

// commandCalls is how many of the commands named c's server has run.
func commandCalls(t *testing.T, c *redis.Client, names ...string) int {
	t.Helper()
	info, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	stats, err := bench.ParseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range names {
		n += int(stats[name].Calls)
	}
	return n
}

// As above, but the quorum's holder lets go between the refusals and the
// give-back of the primary, and its release woke somebody else (here it
// publishes nothing at all): the waiters the primary refused wait for its
// holder, so once the key is found free of any quorum the primary's holder
// wakes them (one PUBLISH on the primary). Without it, 100 workers on three
// masters could all wait a whole TTL for a key nobody held.
func TestQuorumGoneBeforeGiveBackWakes(t *testing.T) {
	ctx := t.Context()
	b, direct := masters(t)
	const key, token = "k", "0123456789abcdef0123456789abcdef"
	primary := b.primary(key)
	var others []int
	for i := range b.nodes {
		if i != primary {
			others = append(others, i)
			take(t, b, i, key, token, time.Minute)
		}
	}
	testHookGiveBack = func() {
		for _, i := range others {
			if err := b.nodes[i].GiveBack(ctx, key, token); err != nil {
				t.Errorf("holder's release on master %d: %v", i, err)
			}
		}
	}
	t.Cleanup(func() { testHookGiveBack = nil })
	before := publishCalls(t, direct[primary])
	if _, err := dlock.New(b, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire = %v; want refused", err)
	}
	if n := publishCalls(t, direct[primary]) - before; n != 1 {
		t.Errorf("the primary published %d times after its holder gave it back, want 1 (the wake-up)", n)
	}
	for _, i := range others {
		if n := publishCalls(t, direct[i]); n != 0 {
			t.Errorf("master %d published %d times, want 0: one wake-up is enough", i, n)
		}
	}
}

// The herd: a release wakes a waiter in every process, and all but one are
// refused. Ten waiters, each on a backend of its own (as in ten processes),
// wait for a held key; after the release, the key's two other masters see
// the release and the winner's acquire (and perhaps a split-vote retry),
// not a look from every waiter, which the primary alone refuses. With FIFO
// only the next in line looks: the three masters together run the release
// and the winner's grant. Then the waiters take the key in turn: the looks
// lose no wake-up.
func TestWaitersLookAtPrimaryAlone(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprint("fifo=", fifo), func(t *testing.T) { testWaitersLook(t, fifo) })
	}
}

func testWaitersLook(t *testing.T, fifo bool) {
	ctx := t.Context()
	hb, direct := masters(t, WithFIFO(fifo))
	// newBackend is a backend over direct's servers, as a process of its
	// own would have.
	newBackend := func() *Backend {
		var clients []redis.UniversalClient
		for _, d := range direct {
			c := redis.NewClient(&redis.Options{Addr: d.Options().Addr, ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = c.Close() })
			clients = append(clients, c)
		}
		b, err := New(clients, WithPrefix("t:"), WithFIFO(fifo))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	const key, waiters = "k", 10
	primary := hb.primary(key)
	holder, err := dlock.New(hb, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan *dlock.Lock, waiters)
	failed := make(chan error, waiters)
	for range waiters {
		b := newBackend()
		go func() {
			l, err := dlock.New(b, dlock.WithTTL(time.Minute), dlock.WithMaxWait(time.Minute)).Acquire(ctx, key)
			if err != nil {
				failed <- err
				return
			}
			granted <- l
		}()
	}
	// Every waiter has subscribed on every master.
	for _, d := range direct {
		for {
			chans, err := d.PubSubChannels(ctx, "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(chans) == 1 && d.PubSubNumSub(ctx, chans[0]).Val()[chans[0]] == waiters {
				break
			}
			select {
			case err := <-failed:
				t.Fatalf("a waiter failed: %v", err)
			case <-time.After(time.Millisecond):
			}
		}
	}
	// And has looked once more: a subscription that was not live before
	// the refusal cannot tell whether it missed a release, so it wakes its
	// waiter at once. The primary then ran the holder's grant and two
	// scripts per waiter.
	deadline := time.Now().Add(time.Minute)
	for n := 0; n < 1+2*waiters; n = scriptCalls(t, direct[primary]) {
		if time.Now().After(deadline) {
			t.Fatalf("the primary ran %d scripts before the release, want %d", n, 1+2*waiters)
		}
		time.Sleep(time.Millisecond)
	}
	for _, d := range direct {
		if err := d.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	var l *dlock.Lock
	select {
	case l = <-granted:
	case err := <-failed:
		t.Fatalf("a waiter failed: %v", err)
	}
	if fifo {
		total := 0
		for _, d := range direct {
			total += scriptCalls(t, d)
		}
		if total >= waiters {
			t.Errorf("the masters ran %d scripts from the release to the grant; want the release and the grant (3 each), not a look per waiter (%d)", total, waiters)
		}
	} else {
		// Each waiter looked (the release woke one in each backend): the
		// primary ran the release and at least one script per waiter.
		for scriptCalls(t, direct[primary]) < 1+waiters {
			time.Sleep(time.Millisecond)
		}
		for i, d := range direct {
			if n := scriptCalls(t, d); i != primary && n >= waiters {
				t.Errorf("master %d (not the primary) ran %d scripts after the release; want the release and the winner's acquire, not one look per waiter (%d)", i, n, waiters)
			}
		}
	}
	for range waiters - 1 {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case l = <-granted:
		case err := <-failed:
			t.Fatalf("a waiter failed: %v", err)
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A look at a primary that fails (here its client is closed) pauses the
// looks at it, so that a hung primary does not cost every waiter's look
// its master timeout; the attempt asks the other masters and is granted.
func TestFailedLookPausesLooks(t *testing.T) {
	ctx := t.Context()
	b, direct := masters(t)
	const key, token = "k", "0123456789abcdef0123456789abcdef"
	primary := b.primary(key)
	for i := range b.nodes {
		take(t, b, i, key, token, time.Minute)
	}
	subscribed := make(chan struct{})
	granted := make(chan error, 1)
	go func() {
		c := dlock.New(b, dlock.WithTTL(time.Minute), dlock.WithMaxWait(time.Minute),
			dlock.WithOnWait(func(dlock.Record) { close(subscribed) }))
		_, err := c.Acquire(ctx, key)
		granted <- err
	}()
	<-subscribed
	for {
		b.mu.Lock()
		n := len(b.watching)
		b.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := direct[primary].Close(); err != nil {
		t.Fatal(err)
	}
	for i := range b.nodes {
		if i != primary {
			if err := b.nodes[i].Release(ctx, key, token); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-granted; err != nil {
		t.Fatalf("waiter with the primary's client closed: %v", err)
	}
	if time.Now().UnixNano() >= b.lookPaused[primary].Load() {
		t.Error("the primary's failed look did not pause the looks at it")
	}
}

// attemptCount counts the Acquire calls that returned.
type attemptCount struct {
	*Backend
	done atomic.Int32
}

func (c *attemptCount) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, ok, err := c.Backend.Acquire(ctx, req)
	c.done.Add(1)
	return rec, ok, err
}

// With FIFO, a holder's release that reached only the primary (the other
// masters did not answer) leaves it a quorum there. The next in line takes
// the primary, finds that quorum, and gives its turn up; its wait sleeps
// until that holder's lease would end, since with FIFO no release on the
// other masters publishes. So when the releases made again in the
// background reach them, the waiters are woken once no quorum holds the
// key: the waiter is granted then, not at the end of the lease.
func TestFIFOWaitersWokenWhenLateReleasesLand(t *testing.T) {
	b, _ := masters(t, WithFIFO(true))
	const key, token = "k", "0123456789abcdef0123456789abcdef"
	primary := b.primary(key)
	for i := range b.nodes {
		if i != primary {
			take(t, b, i, key, token, time.Minute) // the holder's shares left
		}
	}
	w := &attemptCount{Backend: b}
	granted := make(chan error, 1)
	go func() {
		l, err := dlock.New(w, dlock.WithTTL(time.Minute), dlock.WithMaxWait(30*time.Second)).Acquire(t.Context(), key)
		if err == nil {
			err = l.Release(t.Context())
		}
		granted <- err
	}()
	// Its first attempt gave its turn up, and so did the look it makes at
	// once on subscribing (not live before the refusal, the subscription
	// cannot tell whether it missed a release): now it sleeps.
	deadline := time.Now().Add(time.Minute)
	for w.done.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the waiter made %d attempts, want 2", w.done.Load())
		}
		time.Sleep(time.Millisecond)
	}
	for i := range b.nodes {
		if i != primary {
			b.releaseLeg(i, key, token, true, time.Now().Add(time.Minute))
		}
	}
	if err := <-granted; err != nil {
		t.Fatalf("waiter once the holder's late releases landed: %v", err)
	}
}

// A FIFO release frees the other masters before the primary, whose release
// wakes the next in line: when that one asks the other masters, the lease
// is gone from them, rather than looking like a holder with a quorum.
func TestFIFOReleaseFreesPrimaryLast(t *testing.T) {
	b, _ := masters(t, WithFIFO(true))
	const key = "k"
	primary := b.primary(key)
	l, err := dlock.New(b, dlock.WithTTL(time.Minute)).TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.inflight.Wait(t.Context()); err != nil { // every master's grant
		t.Fatal(err)
	}
	checked := false
	testHookReleasePrimary = func() {
		checked = true
		for i, n := range b.nodes {
			_, found, err := n.Inspect(t.Context(), key)
			if err != nil || found != (i == primary) {
				t.Errorf("master %d as the primary's release is sent: held %v, %v; want only the primary still held", i, found, err)
			}
		}
	}
	t.Cleanup(func() { testHookReleasePrimary = nil })
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !checked {
		t.Error("the release did not come to the primary's turn")
	}
}
