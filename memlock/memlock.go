// Package memlock is an in-process dlock backend: locks live in a map
// guarded by a mutex. It gives mutual exclusion among the goroutines of one
// process that share a [Backend], sound fences (per-key counters that survive
// release and cleanup for the Backend's lifetime) and push wake-ups for
// waiters. Use it for single-process programs and tests; use filelock or a
// networked backend to exclude other processes.
package memlock

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
)

// Backend keeps locks in memory. The zero value is not usable; call [New].
type Backend struct {
	mu       sync.Mutex
	leases   map[string]*lease
	fences   map[string]uint64
	watchers map[string]map[chan struct{}]struct{}
}

type lease struct {
	rec   dlock.Record
	token string
}

var (
	_ dlock.Backend       = (*Backend)(nil)
	_ dlock.Lister        = (*Backend)(nil)
	_ dlock.StatsReporter = (*Backend)(nil)
	_ dlock.Cleaner       = (*Backend)(nil)
	_ dlock.Breaker       = (*Backend)(nil)
	_ dlock.Notifier      = (*Backend)(nil)
	_ dlock.Keeper        = (*Backend)(nil)
)

// New returns an empty in-memory backend.
func New() *Backend {
	return &Backend{
		leases:   make(map[string]*lease),
		fences:   make(map[string]uint64),
		watchers: make(map[string]map[chan struct{}]struct{}),
	}
}

// live returns key's lease if it has not expired. Callers hold b.mu.
func (b *Backend) live(key string, now time.Time) (*lease, bool) {
	l, ok := b.leases[key]
	if !ok || !now.Before(l.rec.ExpiresAt) {
		return nil, false
	}
	return l, true
}

// Acquire implements [dlock.Backend].
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return dlock.Record{}, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if l, ok := b.live(req.Key, now); ok {
		return l.rec, false, nil
	}
	b.fences[req.Key]++
	rec := dlock.Record{
		Key:        req.Key,
		LockID:     req.LockID,
		Fence:      b.fences[req.Key],
		AcquiredAt: now,
		ExpiresAt:  now.Add(req.TTL),
		Owner:      req.Owner,
	}
	b.leases[req.Key] = &lease{rec: rec, token: req.Token}
	return rec, true, nil
}

// Refresh implements [dlock.Backend].
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	return b.extend(ctx, "refresh", key, token, ttl)
}

// Keep implements [dlock.Keeper]: a refresh that wakes the key's waiters
// if the lease now ends sooner.
func (b *Backend) Keep(ctx context.Context, key, token string, ttl time.Duration) error {
	_, err := b.extend(ctx, "keep", key, token, ttl)
	return err
}

// extend sets the lease of key, if token holds it, to ttl from now; if
// that ends it sooner, its waiters, who sleep until the expiry they were
// told of, are woken to look again.
func (b *Backend) extend(ctx context.Context, op, key, token string, ttl time.Duration) (dlock.Record, error) {
	if err := ctx.Err(); err != nil {
		return dlock.Record{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	l, ok := b.live(key, now)
	if !ok || l.token != token {
		return dlock.Record{}, fmt.Errorf("memlock: %s %q: %w", op, key, dlock.ErrNotHeld)
	}
	until := now.Add(ttl)
	if until.Before(l.rec.ExpiresAt) {
		b.wake(key)
	}
	l.rec.ExpiresAt = until
	return l.rec, nil
}

// Release implements [dlock.Backend].
func (b *Backend) Release(ctx context.Context, key, token string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.live(key, time.Now())
	if !ok || l.token != token {
		return fmt.Errorf("memlock: release %q: %w", key, dlock.ErrNotHeld)
	}
	b.remove(key)
	return nil
}

// remove deletes key's lease and wakes its watchers. Callers hold b.mu.
func (b *Backend) remove(key string) {
	delete(b.leases, key)
	b.wake(key)
}

// wake wakes key's watchers. Callers hold b.mu.
func (b *Backend) wake(key string) {
	for ch := range b.watchers[key] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Inspect implements [dlock.Backend].
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return dlock.Record{}, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.live(key, time.Now())
	if !ok {
		return dlock.Record{}, false, nil
	}
	return l.rec, true, nil
}

// List implements [dlock.Lister].
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var out []dlock.Record
	for key := range b.leases {
		if l, ok := b.live(key, now); ok && strings.HasPrefix(key, prefix) {
			out = append(out, l.rec)
		}
	}
	slices.SortFunc(out, func(a, b dlock.Record) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Stats implements [dlock.StatsReporter].
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	if err := ctx.Err(); err != nil {
		return dlock.Stats{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	var s dlock.Stats
	for key := range b.leases {
		s.Total++
		if _, ok := b.live(key, now); ok {
			s.Active++
		} else {
			s.Expired++
		}
	}
	return s, nil
}

// Cleanup implements [dlock.Cleaner]. Fences are kept.
func (b *Backend) Cleanup(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	n := 0
	for key := range b.leases {
		if _, ok := b.live(key, now); !ok {
			b.remove(key)
			n++
		}
	}
	return n, nil
}

// Break implements [dlock.Breaker].
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return dlock.Record{}, false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.live(key, time.Now())
	if !ok {
		return dlock.Record{}, false, nil
	}
	b.remove(key)
	return l.rec, true, nil
}

// Subscribe implements [dlock.Notifier]. The channel starts with a value
// in it: the waiter looks again at once, in case the key was released
// between its refusal and the subscription.
func (b *Backend) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.watchers[key] == nil {
		b.watchers[key] = make(map[chan struct{}]struct{})
	}
	b.watchers[key][ch] = struct{}{}
	cancel := func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.watchers[key], ch)
		if len(b.watchers[key]) == 0 {
			delete(b.watchers, key)
		}
	}
	return ch, cancel, nil
}
