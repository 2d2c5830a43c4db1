package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dlock-dev/dlock"
)

// Counts holds the number of calls made through a backend wrapped by
// [Count]. Each [dlock.Backend] method is one atomic step in the store, one
// round trip where the store allows it, so these are the store operations
// the core made.
type Counts struct {
	Acquire   atomic.Uint64
	Refresh   atomic.Uint64
	Release   atomic.Uint64
	Inspect   atomic.Uint64
	Subscribe atomic.Uint64 // Notifier.Subscribe: one watch per waiting Acquire
}

// StoreOps returns the lock-state operations so far: acquires, refreshes,
// releases and inspections. Subscriptions are counted apart, since a watch
// is set up once per wait, not once per attempt.
func (c *Counts) StoreOps() uint64 {
	return c.Acquire.Load() + c.Refresh.Load() + c.Release.Load() + c.Inspect.Load()
}

// Count wraps b so that every call through it is counted in the returned
// Counts. The wrapper is a [dlock.Notifier] exactly when b is one: the core
// finds that ability by type assertion and waits differently with it, so
// hiding it (or claiming it falsely) would change what is measured. The
// administrative abilities (Lister, StatsReporter, Cleaner, Breaker) are
// forwarded uncounted; when b lacks one, the wrapper's method returns an
// error matching [dlock.ErrUnsupported], as the client would.
func Count(b dlock.Backend) (dlock.Backend, *Counts) {
	c := &counted{inner: b, counts: new(Counts)}
	if n, ok := b.(dlock.Notifier); ok {
		return &countedNotifier{counted: c, notifier: n}, c.counts
	}
	return c, c.counts
}

type counted struct {
	inner  dlock.Backend
	counts *Counts
}

var (
	_ dlock.Backend       = (*counted)(nil)
	_ dlock.Lister        = (*counted)(nil)
	_ dlock.StatsReporter = (*counted)(nil)
	_ dlock.Cleaner       = (*counted)(nil)
	_ dlock.Breaker       = (*counted)(nil)
	_ dlock.Drainer       = (*counted)(nil)
	_ dlock.Notifier      = (*countedNotifier)(nil)
)

// Drain forwards to the backend's, if it has one, so that a client over
// the counted backend drains it too.
func (c *counted) Drain(ctx context.Context) error {
	if d, ok := c.inner.(dlock.Drainer); ok {
		return d.Drain(ctx)
	}
	return nil
}

func (c *counted) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	c.counts.Acquire.Add(1)
	return c.inner.Acquire(ctx, req)
}

func (c *counted) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	c.counts.Refresh.Add(1)
	return c.inner.Refresh(ctx, key, token, ttl)
}

func (c *counted) Release(ctx context.Context, key, token string) error {
	c.counts.Release.Add(1)
	return c.inner.Release(ctx, key, token)
}

func (c *counted) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	c.counts.Inspect.Add(1)
	return c.inner.Inspect(ctx, key)
}

func (c *counted) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	l, ok := c.inner.(dlock.Lister)
	if !ok {
		return nil, fmt.Errorf("bench: list: %w", dlock.ErrUnsupported)
	}
	return l.List(ctx, prefix)
}

func (c *counted) Stats(ctx context.Context) (dlock.Stats, error) {
	s, ok := c.inner.(dlock.StatsReporter)
	if !ok {
		return dlock.Stats{}, fmt.Errorf("bench: stats: %w", dlock.ErrUnsupported)
	}
	return s.Stats(ctx)
}

func (c *counted) Cleanup(ctx context.Context) (int, error) {
	cl, ok := c.inner.(dlock.Cleaner)
	if !ok {
		return 0, fmt.Errorf("bench: cleanup: %w", dlock.ErrUnsupported)
	}
	return cl.Cleanup(ctx)
}

func (c *counted) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	b, ok := c.inner.(dlock.Breaker)
	if !ok {
		return dlock.Record{}, false, fmt.Errorf("bench: break: %w", dlock.ErrUnsupported)
	}
	return b.Break(ctx, key)
}

type countedNotifier struct {
	*counted
	notifier dlock.Notifier
}

func (c *countedNotifier) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	c.counts.Subscribe.Add(1)
	return c.notifier.Subscribe(ctx, key)
}
