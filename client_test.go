package dlock_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/memlock"
)

// An acquire whose outcome is unknown (the reply was lost after the store
// granted) gives the token back, so the key is not held for a whole TTL by
// nobody.
func TestAcquireErrorAbandons(t *testing.T) {
	ctx := t.Context()
	c, f, mem := newFaulty(t)
	key := uniqueKey(t)
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{After: true, Times: 1})
	l, err := c.TryAcquire(ctx, key, dlock.WithTTL(time.Hour))
	if !errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, dlock.ErrNotAcquired) || l != nil {
		t.Fatalf("TryAcquire with a lost reply = %v, %v; want ErrUnavailable only", l, err)
	}
	if !strings.HasPrefix(err.Error(), "dlock: ") || !strings.Contains(err.Error(), key) {
		t.Errorf("error %q should name the package and the key", err)
	}
	if n := f.Calls(dlocktest.OpRelease); n != 1 {
		t.Errorf("backend Release called %d times, want 1 (abandon)", n)
	}
	if _, found, _ := mem.Inspect(ctx, key); found {
		t.Error("the granted lease was not given back")
	}
	if st, _ := c.Stats(ctx); st.Held != 0 {
		t.Errorf("Held = %d after a failed acquire", st.Held)
	}
}

// The caller gave up (deadline) while its request was in flight: the error
// says so, and the abandon runs on a context of its own, since the caller's
// is already done.
func TestAcquireCancelledInFlight(t *testing.T) {
	c, f, mem := newFaulty(t)
	key := uniqueKey(t)
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{After: true, Delay: time.Hour, Times: 1})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx, key, dlock.WithTTL(time.Hour))
	if !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire cut short = %v, want ErrNotAcquired and DeadlineExceeded", err)
	}
	if _, found, _ := mem.Inspect(t.Context(), key); found {
		t.Error("the lease granted before the deadline was not given back")
	}
}

// gatedRelease holds every Release until open is closed, as a slow store
// would.
type gatedRelease struct {
	dlock.Backend
	open chan struct{}
}

func (g gatedRelease) Release(ctx context.Context, key, token string) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Backend.Release(ctx, key, token)
}

// A failed acquire returns before its slow give-back has landed; Drain
// waits for it, so that a program closing its store or exiting leaves
// nothing held.
func TestDrainWaitsForAbandonedRelease(t *testing.T) {
	mem := memlock.New()
	gate := gatedRelease{Backend: mem, open: make(chan struct{})}
	f := &dlocktest.Faulty{Backend: gate}
	c := dlock.New(f)
	key := uniqueKey(t)
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{After: true, Times: 1})
	if _, err := c.TryAcquire(t.Context(), key, dlock.WithTTL(time.Hour)); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryAcquire with a lost reply = %v, want ErrUnavailable", err)
	}

	done, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Drain(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain while the release is held up = %v, want context.Canceled", err)
	}
	if _, found, _ := mem.Inspect(t.Context(), key); !found {
		t.Fatal("the lease is gone before its release was let through")
	}

	close(gate.open)
	if err := c.Drain(t.Context()); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if _, found, _ := mem.Inspect(t.Context(), key); found {
		t.Error("Drain returned before the abandoned lease was given back")
	}
	if err := c.Drain(done); err != nil {
		t.Errorf("Drain with nothing in flight = %v, want nil even on a done context", err)
	}
}

// drainingBackend is a Drainer whose Drain returns err.
type drainingBackend struct {
	dlock.Backend
	err error
}

func (d drainingBackend) Drain(context.Context) error { return d.err }

// Client.Drain goes on to the backend's own background calls.
func TestDrainDrainsBackend(t *testing.T) {
	busy := errors.New("still running")
	c := dlock.New(drainingBackend{Backend: memlock.New(), err: busy})
	if err := c.Drain(t.Context()); !errors.Is(err, busy) {
		t.Fatalf("Drain = %v, want the backend's Drain error", err)
	}
}

func TestRetryWithoutNotifier(t *testing.T) {
	ctx := t.Context()
	c, f, _ := newFaulty(t)
	key := uniqueKey(t)
	holder := mustTry(t, c, key, dlock.WithTTL(time.Hour))

	tests := []struct {
		name  string
		retry dlock.RetryStrategy
		calls int
	}{
		{"NoRetry", dlock.NoRetry(), 1},
		{"LimitRetry 3", dlock.LimitRetry(dlock.LinearBackoff(time.Millisecond), 3), 4},
	}
	for _, tt := range tests {
		before := f.Calls(dlocktest.OpAcquire)
		_, err := c.Acquire(ctx, key, dlock.WithRetry(tt.retry))
		if !errors.Is(err, dlock.ErrNotAcquired) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want ErrNotAcquired without a context error", tt.name, err)
		}
		var nae *dlock.NotAcquiredError
		if errors.As(err, &nae) && (nae.Holder == nil || nae.Holder.LockID != holder.LockID()) {
			t.Errorf("%s: holder %+v, want lock %s", tt.name, nae.Holder, holder.LockID())
		}
		if n := f.Calls(dlocktest.OpAcquire) - before; n != tt.calls {
			t.Errorf("%s: %d attempts, want %d", tt.name, n, tt.calls)
		}
	}
}

// Without notifications, a waiter's sleep is cut short at the holder's
// expiry, however long the retry strategy asks for.
func TestWaitUntilHolderExpiry(t *testing.T) {
	c, _, _ := newFaulty(t)
	key := uniqueKey(t)
	mustTry(t, c, key, dlock.WithTTL(100*time.Millisecond))
	l, err := c.Acquire(t.Context(), key, dlock.WithRetry(dlock.LinearBackoff(time.Hour)), dlock.WithMaxWait(10*time.Second))
	if err != nil {
		t.Fatalf("Acquire after the holder's expiry: %v", err)
	}
	_ = l.Release(t.Context())
}

func TestUnsupportedCapabilities(t *testing.T) {
	ctx := t.Context()
	c, _, _ := newFaulty(t) // Faulty hides memlock's optional interfaces
	key := uniqueKey(t)
	mustTry(t, c, key)
	mustTry(t, c, key+"-2")
	st, err := c.Stats(ctx)
	if !errors.Is(err, dlock.ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Stats = %v, want ErrUnsupported", err)
	}
	if st.Held != 2 {
		t.Errorf("Stats.Held = %d without a StatsReporter, want 2", st.Held)
	}
	if _, err := c.List(ctx, ""); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("List = %v, want ErrUnsupported", err)
	}
	if _, err := c.Cleanup(ctx); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("Cleanup = %v, want ErrUnsupported", err)
	}
	if _, _, err := c.Break(ctx, key); !errors.Is(err, dlock.ErrUnsupported) {
		t.Errorf("Break = %v, want ErrUnsupported", err)
	}
	if _, _, err := c.Break(ctx, ""); !errors.Is(err, dlock.ErrInvalidKey) {
		t.Errorf("Break of an empty key = %v, want ErrInvalidKey", err)
	}
}

func TestReleaseAll(t *testing.T) {
	ctx := t.Context()
	c, f, mem := newFaulty(t)
	other := dlock.New(f)
	var keys []string
	for range 3 {
		keys = append(keys, mustTry(t, c, uniqueKey(t)).Key())
	}
	theirs := mustTry(t, other, uniqueKey(t))
	lost := mustTry(t, c, uniqueKey(t), dlock.WithTTL(dlock.MinTTL))
	waitDone(t, lost) // lost locks are not c's to release any more

	f.Inject(dlocktest.OpRelease, dlocktest.Fault{Times: 1})
	n, err := c.ReleaseAll(ctx)
	if n != 2 || !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("ReleaseAll with one release failing = %d, %v; want 2 and ErrUnavailable", n, err)
	}
	free := 0
	for _, k := range keys {
		if _, found, _ := mem.Inspect(ctx, k); !found {
			free++
		}
	}
	if free != 2 {
		t.Errorf("%d of 3 keys freed, want 2", free)
	}
	if _, found, _ := mem.Inspect(ctx, theirs.Key()); !found {
		t.Error("ReleaseAll released another client's lock")
	}
	if n, err := c.ReleaseAll(ctx); n != 0 || err != nil {
		t.Errorf("second ReleaseAll = %d, %v; want 0, nil", n, err)
	}
}

func TestDoKeepsLockPastTTL(t *testing.T) {
	c := dlock.New(memlock.New())
	key := uniqueKey(t)
	const ttl = 150 * time.Millisecond
	err := c.Do(t.Context(), key, func(ctx context.Context) error {
		first, _, err := c.Inspect(ctx, key)
		if err != nil {
			return err
		}
		// Waiting out several TTLs is the point of this test.
		time.Sleep(3 * ttl)
		rec, found, err := c.Inspect(ctx, key)
		switch {
		case err != nil:
			return err
		case !found || rec.LockID != first.LockID:
			t.Errorf("after 3 TTLs inside Do, the key is held by %+v (found %v), want lock %s", rec, found, first.LockID)
		case ctx.Err() != nil:
			t.Errorf("fn's context done: %v", context.Cause(ctx))
		}
		return nil
	}, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatalf("Do = %v", err)
	}
}

func TestDoWithoutRefreshLosesLock(t *testing.T) {
	c := dlock.New(memlock.New())
	errFn := errors.New("fn gave up")
	err := c.Do(t.Context(), uniqueKey(t), func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			if !errors.Is(context.Cause(ctx), dlock.ErrLockLost) {
				t.Errorf("fn's context cause = %v, want ErrLockLost", context.Cause(ctx))
			}
		case <-time.After(10 * time.Second):
			t.Error("fn's context was not cancelled at the lock's validity")
		}
		return errFn
	}, dlock.WithTTL(50*time.Millisecond), dlock.WithAutoRefresh(false))
	if !errors.Is(err, errFn) || !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Do = %v, want fn's error joined with ErrLockLost", err)
	}
}

func TestDoCallerCancel(t *testing.T) {
	c := dlock.New(memlock.New())
	key := uniqueKey(t)
	ctx, cancel := context.WithCancel(t.Context())
	err := c.Do(ctx, key, func(fnCtx context.Context) error {
		cancel()
		<-fnCtx.Done() // fn's context derives from the caller's
		return fnCtx.Err()
	})
	if !errors.Is(err, context.Canceled) || errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Do = %v, want context.Canceled only", err)
	}
	// The release ran although the caller's context was cancelled.
	if ok, _ := c.IsLocked(t.Context(), key); ok {
		t.Error("key still held after Do returned")
	}
}

func TestDoReleaseError(t *testing.T) {
	c, f, _ := newFaulty(t)
	f.Inject(dlocktest.OpRelease, dlocktest.Fault{})
	err := c.Do(t.Context(), uniqueKey(t), func(context.Context) error { return nil })
	if !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("Do with a failing release = %v, want ErrUnavailable", err)
	}
}

func TestDoPanicReleases(t *testing.T) {
	c, f, mem := newFaulty(t)
	key := uniqueKey(t)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		_ = c.Do(t.Context(), key, func(context.Context) error { panic("boom") })
	}()
	if _, found, _ := mem.Inspect(t.Context(), key); found {
		t.Error("key held after fn panicked")
	}
	if n := f.Calls(dlocktest.OpRelease); n != 1 {
		t.Errorf("Release called %d times, want 1", n)
	}
}

// waitSpy records the lock id the core attaches to the contexts of
// Subscribe and Acquire calls.
type waitSpy struct {
	*memlock.Backend
	mu        sync.Mutex
	subscribe []string
	acquire   map[string][]string // by request lock id: the context's ids
	waited    chan struct{}       // receives after each waiter's attempt
}

func (s *waitSpy) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	id, _ := dlock.WaitingLockID(ctx)
	s.mu.Lock()
	s.subscribe = append(s.subscribe, id)
	s.mu.Unlock()
	return s.Backend.Subscribe(ctx, key)
}

func (s *waitSpy) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	id, ok := dlock.WaitingLockID(ctx)
	if !ok {
		id = "none"
	}
	s.mu.Lock()
	s.acquire[req.LockID] = append(s.acquire[req.LockID], id)
	s.mu.Unlock()
	rec, ok, err := s.Backend.Acquire(ctx, req)
	if id != "none" {
		s.waited <- struct{}{}
	}
	return rec, ok, err
}

// A waiting Acquire marks its subscription and each of its attempts with
// its lock id; a TryAcquire marks nothing.
func TestWaitingLockID(t *testing.T) {
	spy := &waitSpy{Backend: memlock.New(), acquire: map[string][]string{}, waited: make(chan struct{}, 100)}
	c := dlock.New(spy)
	ctx := t.Context()
	key := uniqueKey(t)
	holder := mustTry(t, c, key)
	got := make(chan *dlock.Lock, 1)
	go func() {
		l, err := c.Acquire(ctx, key, dlock.WithMaxWait(time.Minute))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	<-spy.waited // its first attempt was denied
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	waiter := <-got
	if waiter == nil {
		t.FailNow()
	}
	defer waiter.Release(ctx)
	spy.mu.Lock()
	defer spy.mu.Unlock()
	if want := []string{waiter.LockID()}; !slices.Equal(spy.subscribe, want) {
		t.Errorf("Subscribe contexts carried %q, want %q", spy.subscribe, want)
	}
	if ids := spy.acquire[holder.LockID()]; !slices.Equal(ids, []string{"none"}) {
		t.Errorf("TryAcquire's context carried %q, want none", ids)
	}
	ids := spy.acquire[waiter.LockID()]
	if len(ids) < 2 {
		t.Errorf("waiter made %d attempts, want at least 2 (one before and one after the release)", len(ids))
	}
	for _, id := range ids {
		if id != waiter.LockID() {
			t.Errorf("waiter's attempt context carried %q, want %q", id, waiter.LockID())
		}
	}
}

// An Acquire that finds the key free subscribes to nothing: on Redis a
// subscription is a round trip of its own. One that finds it held
// subscribes once and looks again at once, since a release before the
// subscription would go unheard.
func TestAcquireSubscribesOnlyWhenHeld(t *testing.T) {
	spy := &waitSpy{Backend: memlock.New(), acquire: map[string][]string{}, waited: make(chan struct{}, 100)}
	c := dlock.New(spy)
	ctx := t.Context()
	key := uniqueKey(t)
	free, err := c.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	spy.mu.Lock()
	subs, tries := len(spy.subscribe), len(spy.acquire[free.LockID()])
	spy.mu.Unlock()
	if subs != 0 || tries != 1 {
		t.Errorf("Acquire of a free key: %d subscriptions and %d attempts, want 0 and 1", subs, tries)
	}

	_, err = c.Acquire(ctx, key, dlock.WithMaxWait(100*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a held key: %v, want its max wait to end it", err)
	}
	spy.mu.Lock()
	subs = len(spy.subscribe)
	spy.mu.Unlock()
	if subs != 1 {
		t.Errorf("Acquire of a held key: %d subscriptions, want 1", subs)
	}
	_ = free.Release(ctx)
}

// lateLook refuses with the holder's expiry already past but a NextLook an
// hour away, and counts attempts: a backend that takes the expiry watch
// upon itself.
type lateLook struct {
	*memlock.Backend
	attempts atomic.Int32
	refused  chan struct{} // receives after each refusal
}

func (l *lateLook) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	l.attempts.Add(1)
	rec, ok, err := l.Backend.Acquire(ctx, req)
	if err == nil && !ok {
		rec.ExpiresAt = time.Now().Add(-time.Second)
		rec.NextLook = time.Now().Add(time.Hour)
		select {
		case l.refused <- struct{}{}:
		default:
		}
	}
	return rec, ok, err
}

// A refusal's NextLook replaces the holder's expiry as the time a waiter
// looks again on its own; a notification still wakes it at once.
func TestNextLook(t *testing.T) {
	b := &lateLook{Backend: memlock.New(), refused: make(chan struct{}, 1000)}
	c := dlock.New(b)
	ctx := t.Context()
	key := uniqueKey(t)
	holder := mustTry(t, c, key)
	b.attempts.Store(0)

	// Timing out a wait is what shows it: with the expiry (past) as the
	// time to look again it would retry every millisecond.
	_, err := c.Acquire(ctx, key, dlock.WithMaxWait(200*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait behind a holder: %v, want the max wait to end it", err)
	}
	if n := b.attempts.Load(); n != 2 {
		t.Errorf("%d attempts in a 200ms wait, want 2 (one, and one at once after subscribing; the next look was an hour away)", n)
	}

	got := make(chan error, 1)
	go func() {
		l, err := c.Acquire(ctx, key, dlock.WithMaxWait(time.Minute))
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	for range 2 { // the first wait's two attempts
		<-b.refused
	}
	for range 2 { // this one's: it now waits, subscribed
		<-b.refused
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter after the release: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the release did not wake the waiter")
	}
}

// WithOnWait is told once, with the holder, when an Acquire starts to
// wait, and not at all by an Acquire of a free key or a TryAcquire.
func TestOnWait(t *testing.T) {
	c := dlock.New(memlock.New())
	ctx := t.Context()
	key := uniqueKey(t)
	var told []dlock.Record
	onWait := dlock.WithOnWait(func(holder dlock.Record) { told = append(told, holder) })

	holder, err := c.Acquire(ctx, key, onWait)
	if err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Fatalf("Acquire of a free key told of a wait: %+v", told)
	}
	if _, err := c.TryAcquire(ctx, key, onWait); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held key = %v", err)
	}
	if len(told) != 0 {
		t.Fatalf("TryAcquire told of a wait: %+v", told)
	}
	// The hook releases the holder: the waiter is granted after it.
	l, err := c.Acquire(ctx, key, dlock.WithMaxWait(time.Minute), dlock.WithOnWait(func(h dlock.Record) {
		told = append(told, h)
		if err := holder.Release(ctx); err != nil {
			t.Error(err)
		}
	}))
	if err != nil {
		t.Fatalf("Acquire after the hook released the holder: %v", err)
	}
	if len(told) != 1 || told[0].LockID != holder.LockID() {
		t.Errorf("told %+v, want once with the holder %s", told, holder.LockID())
	}
	_ = l.Release(ctx)
}

// pollOnly hides memlock's Notifier, so that a waiter makes attempt after
// attempt; after the third it calls then.
type pollOnly struct {
	dlock.Backend
	attempts atomic.Int32
	then     func()
}

func (p *pollOnly) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	if p.attempts.Add(1) == 3 {
		p.then()
	}
	return p.Backend.Acquire(ctx, req)
}

// WithOnWait is told once per Acquire however many attempts its wait makes.
func TestOnWaitOncePerAcquire(t *testing.T) {
	ctx := t.Context()
	key := uniqueKey(t)
	mem := memlock.New()
	holder, err := dlock.New(mem).TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	p := &pollOnly{Backend: mem}
	p.then = func() {
		if err := holder.Release(ctx); err != nil {
			t.Error(err)
		}
	}
	told := 0
	l, err := dlock.New(p).Acquire(ctx, key, dlock.WithRetry(dlock.LinearBackoff(time.Millisecond)),
		dlock.WithOnWait(func(dlock.Record) { told++ }))
	if err != nil {
		t.Fatal(err)
	}
	if n := p.attempts.Load(); n < 3 || told != 1 {
		t.Errorf("%d attempts told of the wait %d times, want at least 3 attempts told once", n, told)
	}
	_ = l.Release(ctx)
}

// waitFreed waits until key is free in mem.
func waitFreed(t *testing.T, mem *memlock.Backend, key, what string) {
	t.Helper()
	waitfor.Until(t, what, func() bool {
		_, found, _ := mem.Inspect(t.Context(), key)
		return !found
	})
}

// heldOnFaulty returns a client over a Faulty memlock, a lock it holds for
// an hour, and its key.
func heldOnFaulty(t *testing.T) (*dlock.Client, *dlocktest.Faulty, *memlock.Backend, string, *dlock.Lock) {
	t.Helper()
	c, f, mem := newFaulty(t)
	key := uniqueKey(t)
	l, err := c.TryAcquire(t.Context(), key, dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return c, f, mem, key, l
}

// A release the store did not confirm is made again in the background
// until it is: one lost call does not leave the key held by nobody for
// the rest of its TTL.
func TestUnconfirmedReleaseIsRetried(t *testing.T) {
	ctx := t.Context()
	_, f, mem, key, l := heldOnFaulty(t)
	f.Inject(dlocktest.OpRelease, dlocktest.Fault{Times: 3})
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("Release on an unreachable store = %v, want ErrUnavailable", err)
	}
	waitFreed(t, mem, key, "the lease is given back once the store answers")
	if n := f.Calls(dlocktest.OpRelease); n != 4 {
		t.Errorf("backend Release called %d times, want 4 (3 failed, then the one that freed the key)", n)
	}
}

// A release the store answered, even with a refusal, is not made again.
func TestAnsweredReleaseIsNotRetried(t *testing.T) {
	ctx := t.Context()
	_, f, mem, key, l := heldOnFaulty(t)
	f.Inject(dlocktest.OpRelease, dlocktest.Fault{Err: dlock.ErrNotHeld, Times: 1})
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Release refused by the store = %v, want ErrNotHeld", err)
	}
	// A retry would free the lease the refusal left in the store; a wait
	// that outlasts any backoff finds it still held. (It goes to the store
	// directly: its own give-back, if its wait ends inside a call, is not
	// counted below.)
	other, err := dlock.New(mem).Acquire(ctx, key, dlock.WithMaxWait(2*time.Second))
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("Acquire after a refused release = %v, %v; want the lease still held", other, err)
	}
	if _, found, _ := mem.Inspect(ctx, key); !found {
		t.Error("the lease left by the refused release is gone")
	}
	if n := f.Calls(dlocktest.OpRelease); n != 1 {
		t.Errorf("backend Release called %d times, want 1", n)
	}
}

// The give-back of an acquire whose outcome is unknown is made again
// while the store cannot be reached.
func TestAbandonRetriesUnconfirmedRelease(t *testing.T) {
	ctx := t.Context()
	c, f, mem := newFaulty(t)
	key := uniqueKey(t)
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{After: true, Times: 1})
	f.Inject(dlocktest.OpRelease, dlocktest.Fault{Times: 2})
	if _, err := c.TryAcquire(ctx, key, dlock.WithTTL(time.Hour)); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryAcquire with a lost reply = %v, want ErrUnavailable", err)
	}
	waitFreed(t, mem, key, "the lease granted before the lost reply is given back")
	if n := f.Calls(dlocktest.OpRelease); n != 3 {
		t.Errorf("backend Release called %d times, want 3", n)
	}
}
