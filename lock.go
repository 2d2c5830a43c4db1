package dlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lock is a held lease on a key, returned by [Client.TryAcquire] and
// [Client.Acquire]. Its methods are safe for concurrent use. Methods on a nil
// *Lock return [ErrNotHeld], so `defer lock.Release(ctx)` is always safe.
type Lock struct {
	client *Client
	key    string
	token  string
	lockID string
	fence  uint64
	opts   options
	ctx    context.Context
	cancel context.CancelCauseFunc

	// The watchdog runs on dogCtx; stopWatchdog cancels it and waits. It
	// starts (under the client's heldLocks) only when the first refresh is
	// due, so a short hold costs no goroutine.
	dogCancel context.CancelFunc
	dogDone   chan struct{}

	mu         sync.Mutex
	rec        Record
	validUntil time.Time // monotonic: sent + ttl - drift

	// keepUntil is when a release may free the key, with WithMinHold:
	// measured from the grant's reply, not its sending, so that the key
	// stays taken for the whole minimum after the holder learnt of it.
	keepUntil time.Time

	// Guarded by the client's heldLocks: when the lock is next due there
	// (the earliest of its validity when filed, dogAt and holdUntil; a
	// refresh moves the validity on when it comes due), its slot there (-1
	// once out), when its watchdog is to start (zero: not to, or started)
	// and when its maximum hold time passes (zero: no bound).
	due       time.Time
	slot      int
	dogAt     time.Time
	holdUntil time.Time
}

// drift is the margin taken off each lease for clock rate differences
// between caller and store and for scheduling delays: 1% of the TTL plus
// 2ms, as in Redlock.
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

func (c *Client) newLock(rec Record, token string, sent time.Time, o options) *Lock {
	l := &Lock{client: c, key: rec.Key, token: token, lockID: rec.LockID, fence: rec.Fence, opts: o, rec: rec, slot: -1}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.validUntil = sent.Add(o.ttl - drift(o.ttl))
	if o.minHold > 0 {
		l.keepUntil = time.Now().Add(o.minHold)
	}
	if o.autoRefresh {
		l.dogAt = sent.Add(refreshInterval(o))
		if o.maxHold > 0 {
			l.holdUntil = sent.Add(o.maxHold)
		}
	}
	c.held.add(l) // may fire the lost signal at once
	return l
}

// refreshInterval is how often the watchdog refreshes a lock taken with o.
func refreshInterval(o options) time.Duration {
	if o.refreshEvery <= 0 || o.refreshEvery >= o.ttl {
		return o.ttl / 3
	}
	return o.refreshEvery
}

// Key returns the locked key.
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.key
}

// Token returns the secret that proves ownership. Anyone with it can refresh
// or release the lock: do not log it.
func (l *Lock) Token() string {
	if l == nil {
		return ""
	}
	return l.token
}

// LockID returns the public id of this grant, safe to show.
func (l *Lock) LockID() string {
	if l == nil {
		return ""
	}
	return l.lockID
}

// Fence returns the grant's fencing number: greater than the fence of every
// earlier grant of the key, within the backend's documented limits. Pass it
// to the resource, which should reject writes with a lower fence than it has
// seen.
func (l *Lock) Fence() uint64 {
	if l == nil {
		return 0
	}
	return l.fence
}

// Record returns the lease as the store last reported it.
func (l *Lock) Record() Record {
	if l == nil {
		return Record{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// ValidUntil returns the monotonic instant until which the lock may be
// assumed held: the send time of the last successful acquire or refresh plus
// the TTL minus drift. Compare it with time.Now(), not with wall clocks.
func (l *Lock) ValidUntil() time.Time {
	if l == nil {
		return time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// Remaining returns how much validity is left; 0 once the lock is released
// or lost.
func (l *Lock) Remaining() time.Duration {
	if l == nil || l.ctx.Err() != nil {
		return 0
	}
	return max(time.Until(l.ValidUntil()), 0)
}

// Done returns a channel that is closed when the lock can no longer be
// assumed held: released, validity passed, a refresh found it gone, or the
// maximum hold time was reached. [Lock.Err] says which.
func (l *Lock) Done() <-chan struct{} {
	if l == nil {
		return closedChan
	}
	return l.ctx.Done()
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Context returns a context that is cancelled when Done closes, with
// [Lock.Err] as its cause. Pass it to work that must stop when the lock goes.
func (l *Lock) Context() context.Context {
	if l == nil {
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(ErrNotHeld)
		return ctx
	}
	return l.ctx
}

// Err returns nil while the lock is held, [ErrReleased] after Release, and an
// error matching [ErrLockLost] (and [ErrMaxHold] when that was the reason)
// once it was lost.
func (l *Lock) Err() error {
	if l == nil {
		return ErrNotHeld
	}
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// lost fires the lost signal (once; later calls do nothing). The lock
// leaves the client's held set first, so that whoever sees Done fire also
// sees it gone from Stats and ReleaseAll.
func (l *Lock) lost(cause error) {
	l.client.held.remove(l)
	l.cancel(cause)
}

// Refresh extends the lease by the TTL it was acquired with, measured from
// now. It returns an error matching [ErrNotHeld] if the lock was released,
// lost, broken or had expired in the store (the lost signal fires then), or
// a backend error such as [ErrUnavailable], after which the lock stays valid
// until its validity passes.
func (l *Lock) Refresh(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("dlock: refresh: %w", ErrNotHeld)
	}
	if err := l.Err(); err != nil {
		return fmt.Errorf("dlock: refresh %q: %w: %w", l.key, ErrNotHeld, err)
	}
	sent := time.Now()
	rec, err := l.client.backend.Refresh(ctx, l.key, l.token, l.opts.ttl)
	if err != nil {
		if errors.Is(err, ErrNotHeld) {
			l.lost(fmt.Errorf("%w: refresh: %w", ErrLockLost, err))
		}
		return fmt.Errorf("dlock: refresh %q: %w", l.key, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil {
		// Validity passed while the request was in flight: the lost signal
		// has fired and stays fired, even though the store extended it.
		return fmt.Errorf("dlock: refresh %q: %w: %w", l.key, ErrNotHeld, context.Cause(l.ctx))
	}
	l.rec = rec
	if v := sent.Add(l.opts.ttl - drift(l.opts.ttl)); v.After(l.validUntil) {
		l.validUntil = v
	}
	return nil
}

// Release frees the lock in the store, stops the watchdog and fires Done
// with [ErrReleased]. It returns an error matching [ErrNotHeld] if the lock
// was already released, lost, broken or expired. When the store cannot be
// reached or does not answer in time (an error matching [ErrUnavailable]
// or ctx's), the release is made again in the background, with backoff,
// until the store confirms it, the lease has expired, or a minute has
// passed ([Client.Drain] does not wait for that). With [WithMinHold], a
// release before the
// minimum hold has passed leaves the key taken until then instead of freeing
// it.
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("dlock: release: %w", ErrNotHeld)
	}
	l.client.held.remove(l) // no watchdog starts from here on
	l.stopWatchdog()
	prior := l.Err()
	l.lost(ErrReleased) // no-op if already done
	if errors.Is(prior, ErrReleased) {
		return fmt.Errorf("dlock: release %q: %w: already released", l.key, ErrNotHeld)
	}
	if prior == nil && !l.keepUntil.IsZero() {
		if rest := time.Until(l.keepUntil); rest > 0 {
			return l.client.keep(ctx, l.key, l.token, rest)
		}
	}
	// Even a lost lock is released in the store: validity may have passed
	// on our clock while the lease still stands there.
	if err := l.client.backend.Release(ctx, l.key, l.token); err != nil {
		if unconfirmed(err) {
			l.mu.Lock()
			expiry := l.validUntil.Add(drift(l.opts.ttl))
			l.mu.Unlock()
			l.client.releaseLater(ctx, l.key, l.token, expiry)
			return fmt.Errorf("dlock: release %q (retrying in the background until the lease expires): %w", l.key, err)
		}
		return fmt.Errorf("dlock: release %q: %w", l.key, err)
	}
	l.client.local.wake(l.key)
	if prior != nil {
		return fmt.Errorf("dlock: release %q: %w: %w", l.key, ErrNotHeld, prior)
	}
	return nil
}

// keep leaves key taken by token for at least rest from now, for a
// minimum hold: it sets the lease to rest plus the drift margin (so that a
// store whose clock runs fast does not end it early), detached from this
// process.
func (c *Client) keep(ctx context.Context, key, token string, rest time.Duration) error {
	ttl := min(max(rest+drift(rest), MinTTL), MaxTTL)
	var err error
	if k, ok := c.backend.(Keeper); ok {
		err = k.Keep(ctx, key, token, ttl)
	} else {
		_, err = c.backend.Refresh(ctx, key, token, ttl)
	}
	if err != nil {
		return fmt.Errorf("dlock: release %q: keep it taken for another %v: %w", key, rest.Round(time.Millisecond), err)
	}
	return nil
}

// ReleaseToken releases the lease token holds on key, for callers that
// have the token but no [Lock] (the CLI's release, a token handed over
// between processes). If keepUntil is in the future, it keeps the key
// taken until then instead, as [WithMinHold] does for a Lock: the lease is
// set to end then (plus the drift margin), detached from any process, and
// kept reports true. It returns an error matching [ErrNotHeld] if token
// does not hold key.
func (c *Client) ReleaseToken(ctx context.Context, key, token string, keepUntil time.Time) (kept bool, err error) {
	if rest := time.Until(keepUntil); !keepUntil.IsZero() && rest > 0 {
		return true, c.keep(ctx, key, token, rest)
	}
	if err := c.backend.Release(ctx, key, token); err != nil {
		return false, fmt.Errorf("dlock: release %q: %w", key, err)
	}
	c.local.wake(key)
	return false, nil
}

func (l *Lock) stopWatchdog() {
	if l.dogCancel == nil {
		return
	}
	l.dogCancel()
	<-l.dogDone
}

// startWatchdog starts the watchdog. The client's heldLocks calls it,
// under its lock, when the first refresh is due.
func (l *Lock) startWatchdog() {
	var ctx context.Context
	ctx, l.dogCancel = context.WithCancel(l.ctx)
	l.dogDone = make(chan struct{})
	go l.watchdog(ctx)
}

// watchdog refreshes the lock at once and then every refresh interval
// until it is released or lost. A failed refresh is retried sooner; if the
// store stays unreachable the validity timer fires the lost signal. (The
// maximum hold time is the client's heldLocks' to enforce.)
func (l *Lock) watchdog(ctx context.Context) {
	defer close(l.dogDone)
	every := refreshInterval(l.opts)
	var tick *time.Timer
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for ctx.Err() == nil {
		refreshCtx, cancel := context.WithDeadline(ctx, l.ValidUntil())
		err := l.Refresh(refreshCtx)
		cancel()
		next := every
		if err != nil {
			next = max(every/4, time.Millisecond)
		}
		if tick == nil {
			tick = time.NewTimer(next)
		} else {
			tick.Reset(next)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}
