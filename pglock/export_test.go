package pglock

// Listening reports whether b's connection for waiters has LISTENed, for
// tests that must start from a listening backend.
func Listening(b *Backend) bool {
	b.notify.mu.Lock()
	defer b.notify.mu.Unlock()
	return b.notify.listening
}
