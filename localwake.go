package dlock

import "sync"

// localWake wakes the waiting Acquires of a Client whose backend cannot
// notify (it is no [Notifier]) when that Client frees the key they wait
// for. A release by another process is still found by polling, with the
// retry strategy's backoff; one by this process (another goroutine's
// Lock) need not wait for the next poll. Every waiter of the key is woken:
// which of them the store grants is the store's choice.
type localWake struct {
	mu   sync.Mutex
	keys map[string]map[chan struct{}]struct{}
}

// listen returns a channel that receives (it is buffered) after each wake
// of key, until stop is called.
func (w *localWake) listen(key string) (woken <-chan struct{}, stop func()) {
	ch := make(chan struct{}, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.keys == nil {
		w.keys = make(map[string]map[chan struct{}]struct{})
	}
	if w.keys[key] == nil {
		w.keys[key] = make(map[chan struct{}]struct{})
	}
	w.keys[key][ch] = struct{}{}
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.keys[key], ch)
		if len(w.keys[key]) == 0 {
			delete(w.keys, key)
		}
	}
}

// wake wakes the listeners of key. Safe on nil (a backend that notifies).
func (w *localWake) wake(key string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.keys[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
