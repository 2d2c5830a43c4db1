package pglock

import "time"

// Listening reports whether b's connection for waiters has LISTENed, for
// tests that must start from a listening backend.
func Listening(b *Backend) bool {
	b.notify.mu.Lock()
	defer b.notify.mu.Unlock()
	return b.notify.listening
}

// SetLinger sets how long b keeps listening after the last waiter left.
func SetLinger(b *Backend, d time.Duration) {
	b.notify.mu.Lock()
	defer b.notify.mu.Unlock()
	b.notify.linger = d
}

// LockClass is the first half of the advisory locks that serialize the
// grants of a key, for tests that hold one.
const LockClass = lockClass

// Sleeping reports how many of b's waiters of key are subscribed and
// asleep: heard since they last looked, not woken, no attempt on its way.
func Sleeping(b *Backend, key string) int {
	b.notify.mu.Lock()
	defer b.notify.mu.Unlock()
	n := 0
	for _, s := range b.notify.byKey[key] {
		if s.subscribed && s.heard && !s.woken && !s.inFlight {
			n++
		}
	}
	return n
}
