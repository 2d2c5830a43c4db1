package dlocktest

import (
	"context"

	"github.com/dlock-dev/dlock"
)

// denialWatcher passes calls through to a backend and reports every Acquire
// that found the key held, so a test knows a waiter is really waiting
// before it releases or cancels, instead of sleeping and hoping.
type denialWatcher struct {
	dlock.Backend
	denied chan struct{}
}

func (w *denialWatcher) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := w.Backend.Acquire(ctx, req)
	if err == nil && !granted {
		select {
		case w.denied <- struct{}{}:
		default:
		}
	}
	return rec, granted, err
}

// notifyingDenialWatcher keeps the backend's Notifier visible to the core,
// so that waiters through the watcher are woken the way they would be
// without it.
type notifyingDenialWatcher struct {
	*denialWatcher
	dlock.Notifier
}

// WatchDenials wraps b for a test that must know a waiter is really
// waiting before it releases or cancels: the channel receives (without
// blocking the caller) after each Acquire that was denied. A Notifier stays
// one, so waiters are woken as they would be without the wrapper.
func WatchDenials(b dlock.Backend) (dlock.Backend, <-chan struct{}) {
	w := &denialWatcher{Backend: b, denied: make(chan struct{}, 1)}
	if n, ok := b.(dlock.Notifier); ok {
		return &notifyingDenialWatcher{denialWatcher: w, Notifier: n}, w.denied
	}
	return w, w.denied
}
