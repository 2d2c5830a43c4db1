package redlock

import "context"

// Retrying returns how many shares b is releasing again in the background.
func Retrying(b *Backend) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.retrying)
}

// WaitMasterCalls waits for b's calls to masters slower than the quorum to
// return (at most the master timeout), but not for what the masters'
// backends go on with after that.
func WaitMasterCalls(ctx context.Context, b *Backend) error { return b.inflight.Wait(ctx) }

// Primary returns the index of key's primary master.
func Primary(b *Backend, key string) int { return b.primary(key) }
