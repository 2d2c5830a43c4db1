package redlock

// Retrying returns how many shares b is releasing again in the background.
func Retrying(b *Backend) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.retrying)
}
