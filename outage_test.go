package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

// tokenLog passes calls through and notes the token of each Acquire and
// Release, so that a test can tell which attempts were given back.
type tokenLog struct {
	dlock.Backend
	mu       sync.Mutex
	acquired []string // token of each Acquire call, in order
	released []string
}

func (l *tokenLog) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	l.mu.Lock()
	l.acquired = append(l.acquired, req.Token)
	l.mu.Unlock()
	return l.Backend.Acquire(ctx, req)
}

func (l *tokenLog) Release(ctx context.Context, key, token string) error {
	l.mu.Lock()
	l.released = append(l.released, token)
	l.mu.Unlock()
	return l.Backend.Release(ctx, key, token)
}

func (l *tokenLog) tokens() (acquired, released []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acquired), slices.Clone(l.released)
}

// newOutage returns a client over a Faulty memory backend whose calls are
// logged, and a holder of key taken on the same store.
func newOutage(t *testing.T, key string, opts ...dlock.Option) (*dlock.Client, *dlocktest.Faulty, *tokenLog, *dlock.Lock) {
	t.Helper()
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	log := &tokenLog{Backend: f}
	holder := mustTry(t, dlock.New(mem), key, dlock.WithTTL(time.Hour))
	return dlock.New(log, opts...), f, log, holder
}

// A waiter whose store becomes unavailable keeps waiting: each failed
// attempt is given back, the next is made with a fresh token, and the key
// is granted once the store answers again and the holder has gone.
func TestWaitRidesOutOutage(t *testing.T) {
	key := uniqueKey(t)
	c, f, log, holder := newOutage(t, key, dlock.WithRetry(dlock.LinearBackoff(time.Millisecond)))
	onWait := dlock.WithOnWait(func(dlock.Record) {
		// After the first refusal: three attempts fail, and the key is free
		// for the one after them.
		f.Inject(dlocktest.OpAcquire, dlocktest.Fault{Times: 3})
		if err := holder.Release(t.Context()); err != nil {
			t.Error(err)
		}
	})
	l, err := c.Acquire(t.Context(), key, dlock.WithMaxWait(time.Minute), onWait)
	if err != nil {
		t.Fatalf("Acquire through an outage of three attempts: %v", err)
	}
	defer l.Release(t.Context())
	if n := f.Calls(dlocktest.OpAcquire); n != 5 {
		t.Errorf("%d attempts, want 5 (refused, three failed, granted)", n)
	}
	if err := c.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	acquired, released := log.tokens()
	if len(acquired) != 5 {
		t.Fatalf("tokens of the attempts: %q, want 5", acquired)
	}
	// The refused attempt and the failed ones: each failure gives back the
	// token it was made with and starts a fresh one.
	want := slices.Compact(slices.Clone(acquired[:4]))
	if len(want) != 3 || acquired[1] != acquired[0] {
		t.Errorf("tokens of the attempts: %q, want the refused one's again, then a fresh one after each failure", acquired)
	}
	if !slices.Equal(released, want) {
		t.Errorf("released tokens %q, want the failed attempts' %q", released, want)
	}
	if l.Token() != acquired[4] || slices.Contains(released, l.Token()) {
		t.Errorf("granted with token %q, want the last attempt's fresh %q", l.Token(), acquired[4])
	}
}

// An unavailable store on the first attempt fails at once, even for a
// waiter: it may be a wrong address, not an outage.
func TestOutageOnFirstAttemptFails(t *testing.T) {
	key := uniqueKey(t)
	c, f, _, holder := newOutage(t, key)
	defer holder.Release(t.Context())
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{})
	_, err := c.Acquire(t.Context(), key, dlock.WithMaxWait(time.Minute))
	if !errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("Acquire with the store down from the start: %v, want ErrUnavailable only", err)
	}
	if n := f.Calls(dlocktest.OpAcquire); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

// A wait that ends during an outage reports both: the wait's end and the
// store's error, with the holder last seen.
func TestWaitEndsDuringOutage(t *testing.T) {
	key := uniqueKey(t)
	c, f, _, holder := newOutage(t, key)
	defer holder.Release(t.Context())
	onWait := dlock.WithOnWait(func(dlock.Record) { f.Inject(dlocktest.OpAcquire, dlocktest.Fault{}) })
	_, err := c.Acquire(t.Context(), key, dlock.WithMaxWait(200*time.Millisecond), onWait)
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("wait that ended during an outage: %v, want ErrNotAcquired, DeadlineExceeded and ErrUnavailable", err)
	}
	if nae.Holder == nil || nae.Holder.LockID != holder.LockID() {
		t.Errorf("holder reported %+v, want the one seen before the outage (%s)", nae.Holder, holder.LockID())
	}
	if n := f.Calls(dlocktest.OpAcquire); n < 2 {
		t.Errorf("%d attempts, want the refused one and at least one failed", n)
	}
}

// Only an unavailable store is waited out: another error, a closed client
// among them, ends the wait at once, and so does a retry strategy that
// stops.
func TestOutageEndsWait(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    dlocktest.Fault
		retry    dlock.RetryStrategy
		want     error
		attempts int
	}{
		{"corrupt record", dlocktest.Fault{Err: dlock.ErrCorrupt}, dlock.LinearBackoff(time.Millisecond), dlock.ErrCorrupt, 2},
		{"client closed", dlocktest.Fault{Err: dlock.ErrClosed}, dlock.LinearBackoff(time.Millisecond), dlock.ErrClosed, 2},
		{"retries exhausted", dlocktest.Fault{}, dlock.LimitRetry(dlock.LinearBackoff(time.Millisecond), 2), dlock.ErrUnavailable, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := uniqueKey(t)
			c, f, _, holder := newOutage(t, key, dlock.WithRetry(tc.retry))
			defer holder.Release(t.Context())
			onWait := dlock.WithOnWait(func(dlock.Record) { f.Inject(dlocktest.OpAcquire, tc.fault) })
			_, err := c.Acquire(t.Context(), key, dlock.WithMaxWait(time.Minute), onWait)
			if !errors.Is(err, tc.want) || errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Acquire = %v, want %v at once", err, tc.want)
			}
			if n := f.Calls(dlocktest.OpAcquire); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

// subscribeFails is a Notifier whose first Subscribe fails; it notes the
// lock id of each subscription and reports when one succeeded.
type subscribeFails struct {
	*memlock.Backend
	mu         sync.Mutex
	ids        []string
	subscribed chan struct{}
}

func (s *subscribeFails) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	id, _ := dlock.WaitingLockID(ctx)
	s.mu.Lock()
	s.ids = append(s.ids, id)
	first := len(s.ids) == 1
	s.mu.Unlock()
	if first {
		return nil, nil, fmt.Errorf("subscribe: %w", dlock.ErrUnavailable)
	}
	ch, cancel, err := s.Backend.Subscribe(ctx, key)
	close(s.subscribed)
	return ch, cancel, err
}

// A waiter whose subscription fails gives back its token (its refused
// attempt may have left a FIFO ticket on Redis) and waits on with a fresh
// lock id, subscribing again. It was told it waits, once.
func TestSubscribeErrorStartsAfresh(t *testing.T) {
	mem := memlock.New()
	b := &subscribeFails{Backend: mem, subscribed: make(chan struct{})}
	log := &tokenLog{Backend: b}
	c := dlock.New(struct {
		*tokenLog
		dlock.Notifier
	}{log, b})
	ctx := t.Context()
	key := uniqueKey(t)
	holder := mustTry(t, dlock.New(mem), key)
	go func() {
		<-b.subscribed
		if err := holder.Release(ctx); err != nil {
			t.Error(err)
		}
	}()
	told := 0
	l, err := c.Acquire(ctx, key, dlock.WithMaxWait(time.Minute), dlock.WithOnWait(func(dlock.Record) { told++ }))
	if err != nil {
		t.Fatalf("Acquire after a failed subscription: %v", err)
	}
	if told != 1 {
		t.Errorf("OnWait called %d times, want once, on the refusal before the failed subscription", told)
	}
	defer l.Release(ctx)
	if err := c.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	acquired, released := log.tokens()
	if len(released) != 1 || released[0] != acquired[0] || l.Token() == acquired[0] {
		t.Errorf("attempts %q, released %q, granted %q: want the first token given back and the grant on a fresh one", acquired, released, l.Token())
	}
	b.mu.Lock()
	ids := slices.Clone(b.ids)
	b.mu.Unlock()
	if len(ids) != 2 || ids[0] != dlock.LockID(acquired[0]) || ids[1] != l.LockID() {
		t.Errorf("subscriptions for lock ids %q, want the first token's and then the grant's (%s)", ids, l.LockID())
	}
}

// scripted answers each Acquire as its plan says, in order: "fail" as an
// unavailable store, "release" by releasing the holder first and then
// asking the store, anything else by asking the store.
type scripted struct {
	dlock.Backend
	holder *dlock.Lock
	mu     sync.Mutex
	plan   []string
}

func (s *scripted) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	s.mu.Lock()
	step := "ask"
	if len(s.plan) > 0 {
		step, s.plan = s.plan[0], s.plan[1:]
	}
	s.mu.Unlock()
	switch step {
	case "fail":
		return dlock.Record{}, false, fmt.Errorf("scripted: %w", dlock.ErrUnavailable)
	case "release":
		if err := s.holder.Release(ctx); err != nil {
			return dlock.Record{}, false, err
		}
	}
	return s.Backend.Acquire(ctx, req)
}

// WithOnOutage is told once per outage, with the store's error: two
// failed attempts in a row are one outage, and one after an answer is a
// new one.
func TestOnOutageOncePerOutage(t *testing.T) {
	mem := memlock.New()
	key := uniqueKey(t)
	holder := mustTry(t, dlock.New(mem), key, dlock.WithTTL(time.Hour))
	b := &scripted{Backend: mem, holder: holder, plan: []string{"ask", "fail", "fail", "ask", "fail", "release"}}
	var outages []error
	l, err := dlock.New(b, dlock.WithRetry(dlock.LinearBackoff(time.Millisecond))).Acquire(t.Context(), key,
		dlock.WithMaxWait(time.Minute), dlock.WithOnOutage(func(err error) { outages = append(outages, err) }))
	if err != nil {
		t.Fatalf("Acquire through two outages: %v", err)
	}
	defer l.Release(t.Context())
	if len(outages) != 2 {
		t.Fatalf("told of %d outages (%v), want 2", len(outages), outages)
	}
	for _, err := range outages {
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Errorf("told of %v, want the store's ErrUnavailable", err)
		}
	}
}
