package dlocktest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// denialWatcher passes calls through to a backend and reports when a
// waiter waits, so a test knows a waiter is really waiting before it
// releases or cancels, instead of sleeping and hoping.
type denialWatcher struct {
	dlock.Backend
	report func(lockID string) // must not block

	// With a Notifier, a waiter waits only once it has subscribed, which
	// the core does after the first refusal: a subscription with no
	// wake-up pending is reported, and each refusal after it (with one
	// pending, the waiter looks again at once). Earlier refusals are not.
	notifier   bool
	mu         sync.Mutex
	subscribed map[string]bool // lock ids of waits that subscribed
}

func (w *denialWatcher) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := w.Backend.Acquire(ctx, req)
	if err == nil && !granted && w.waiting(req.LockID) {
		w.report(req.LockID)
	}
	return rec, granted, err
}

func (w *denialWatcher) waiting(id string) bool {
	if !w.notifier {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.subscribed[id]
}

// notifyingDenialWatcher keeps the backend's Notifier visible to the core,
// so that waiters through the watcher are woken the way they would be
// without it, and notes which waits subscribed.
type notifyingDenialWatcher struct {
	*denialWatcher
	dlock.Notifier
}

func (n *notifyingDenialWatcher) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	ch, cancel, err := n.Notifier.Subscribe(ctx, key)
	if id, ok := dlock.WaitingLockID(ctx); ok && err == nil {
		n.mu.Lock()
		n.subscribed[id] = true
		n.mu.Unlock()
		if len(ch) == 0 {
			n.report(id)
		}
	}
	return ch, cancel, err
}

// watch wraps b, calling report (which must not block) as WatchDenials
// describes.
func watch(b dlock.Backend, report func(lockID string)) dlock.Backend {
	w := &denialWatcher{Backend: b, report: report}
	if n, ok := b.(dlock.Notifier); ok {
		w.notifier = true
		w.subscribed = map[string]bool{}
		return &notifyingDenialWatcher{denialWatcher: w, Notifier: n}
	}
	return w
}

// WatchDenials wraps b for a test that must know a waiter is really
// waiting before it releases or cancels: the channel receives (without
// blocking the caller) after each Acquire that was denied. On a Notifier,
// where the core subscribes after the first refusal, it receives instead
// when the waiter has subscribed with no wake-up pending, and after each
// refusal from then on. A Notifier stays one, so waiters are woken as they
// would be without the wrapper.
func WatchDenials(b dlock.Backend) (dlock.Backend, <-chan struct{}) {
	denied := make(chan struct{}, 1)
	return watch(b, func(string) {
		select {
		case denied <- struct{}{}:
		default:
		}
	}), denied
}

// WatchWaits is WatchDenials for a test that also counts looks: the
// channel receives the lock id of each report and holds up to n of them
// (reports beyond that are dropped).
func WatchWaits(b dlock.Backend, n int) (dlock.Backend, <-chan string) {
	waits := make(chan string, n)
	return watch(b, func(id string) {
		select {
		case waits <- id:
		default:
		}
	}), waits
}

// StartWaiters starts n goroutines that each wait for key in Acquire, on
// clients over b with lease ttl, and returns once every one of them waits
// (see [WatchWaits]). Their locks come on the channel as they are granted:
// nil for one whose Acquire failed, which reports its error on t.
func StartWaiters(ctx context.Context, t testing.TB, b dlock.Backend, key string, n int, ttl time.Duration) <-chan *dlock.Lock {
	t.Helper()
	watched, waits := WatchWaits(b, 4*n)
	grants := make(chan *dlock.Lock, n)
	for range n {
		go func() {
			l, err := dlock.New(watched).Acquire(ctx, key, dlock.WithTTL(ttl))
			if err != nil {
				t.Error(err)
			}
			grants <- l
		}()
	}
	waiting := make(map[string]bool, n)
	for len(waiting) < n {
		select {
		case id := <-waits:
			waiting[id] = true
		case <-ctx.Done():
			t.Fatalf("only %d of %d waiters waited: %v", len(waiting), n, ctx.Err())
		}
	}
	return grants
}
