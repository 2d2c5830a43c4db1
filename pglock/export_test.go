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
