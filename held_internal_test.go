package dlock

import (
	"container/heap"
	"context"
	"errors"
	"testing"
	"time"
)

// heldLock returns a lock of c, valid until validUntil, not yet filed.
func heldLock(c *Client, key string, validUntil time.Time) *Lock {
	l := &Lock{client: c, key: key, slot: -1, opts: options{ttl: time.Minute}, validUntil: validUntil}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	return l
}

// TestHeldLocksTimerPolicy: the timer is armed for the earliest validity,
// and a lock valid until later than the armed time, or one leaving, makes
// no timer call (the point of sharing it: see heldLocks).
func TestHeldLocksTimerPolicy(t *testing.T) {
	c := New(nil)
	h := &c.held
	now := time.Now()
	at := func(d time.Duration) time.Time { return now.Add(d) }

	first := heldLock(c, "first", at(time.Hour))
	h.add(first)
	if !h.armed.Equal(at(time.Hour)) {
		t.Fatalf("armed %v after the first lock, want its validity", h.armed.Sub(now))
	}
	later := heldLock(c, "later", at(2*time.Hour))
	h.add(later)
	if !h.armed.Equal(at(time.Hour)) {
		t.Errorf("armed %v after a later lock, want unchanged (1h)", h.armed.Sub(now))
	}
	first.lost(ErrReleased)
	if !h.armed.Equal(at(time.Hour)) {
		t.Errorf("armed %v after the earliest lock left, want unchanged (1h)", h.armed.Sub(now))
	}
	sooner := heldLock(c, "sooner", at(30*time.Minute))
	h.add(sooner)
	if !h.armed.Equal(at(30 * time.Minute)) {
		t.Errorf("armed %v after a sooner lock, want 30m", h.armed.Sub(now))
	}
	if n := h.len(); n != 2 {
		t.Errorf("%d locks held, want 2", n)
	}
	later.lost(ErrReleased)
	sooner.lost(ErrReleased)
	if n := h.len(); n != 0 {
		t.Errorf("%d locks held after all left, want 0", n)
	}
	h.timer.Stop()
}

// TestHeldLocksFire: when the timer fires, a lock whose validity passed is
// lost, one refreshed meanwhile is filed again under its new validity, and
// one not yet due stays; the timer is then armed for the earliest left.
func TestHeldLocksFire(t *testing.T) {
	c := New(nil)
	h := &c.held
	now := time.Now()
	expired := heldLock(c, "expired", now.Add(time.Hour))
	refreshed := heldLock(c, "refreshed", now.Add(time.Hour))
	waiting := heldLock(c, "waiting", now.Add(2*time.Hour))
	for _, l := range []*Lock{expired, refreshed, waiting} {
		h.add(l)
	}
	defer h.timer.Stop()

	// As if both had come due: one's validity passed, the other's was
	// moved on by a refresh.
	expired.mu.Lock()
	expired.validUntil = now.Add(-time.Millisecond)
	expired.mu.Unlock()
	refreshed.mu.Lock()
	refreshed.validUntil = now.Add(3 * time.Hour)
	refreshed.mu.Unlock()
	h.mu.Lock()
	expired.due = now.Add(-time.Millisecond)
	refreshed.due = now.Add(-time.Millisecond)
	heap.Init(&h.locks)
	h.mu.Unlock()

	h.fire()

	if err := expired.Err(); !errors.Is(err, ErrLockLost) {
		t.Errorf("expired lock: Err = %v, want ErrLockLost", err)
	}
	for _, l := range []*Lock{refreshed, waiting} {
		if err := l.Err(); err != nil {
			t.Errorf("%s lock: Err = %v, want still held", l.key, err)
		}
	}
	if n := h.len(); n != 2 {
		t.Errorf("%d locks held, want 2", n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !refreshed.due.Equal(refreshed.validUntil) {
		t.Errorf("refreshed lock filed under %v, want its new validity %v", refreshed.due.Sub(now), refreshed.validUntil.Sub(now))
	}
	if !h.armed.Equal(waiting.due) {
		t.Errorf("armed for %v, want the earliest left (%v)", h.armed.Sub(now), waiting.due.Sub(now))
	}
}

// grantAll grants every acquire, and counts and reports refreshes.
type grantAll struct {
	refreshed chan struct{}
}

func (b *grantAll) Acquire(_ context.Context, req AcquireRequest) (Record, bool, error) {
	return Record{Key: req.Key, LockID: req.LockID, Fence: 1}, true, nil
}

func (b *grantAll) Refresh(_ context.Context, key, _ string, _ time.Duration) (Record, error) {
	select {
	case b.refreshed <- struct{}{}:
	default:
	}
	return Record{Key: key, Fence: 1}, nil
}

func (b *grantAll) Release(context.Context, string, string) error { return nil }

func (b *grantAll) Inspect(context.Context, string) (Record, bool, error) {
	return Record{}, false, nil
}

// watchdogStarted reports whether l's watchdog was started.
func watchdogStarted(l *Lock) bool {
	h := &l.client.held
	h.mu.Lock()
	defer h.mu.Unlock()
	return l.dogCancel != nil
}

// TestWatchdogStartsWhenDue: a lock with auto-refresh gets its watchdog
// goroutine only when its first refresh is due, so a short hold costs
// none; once due, the watchdog refreshes it past its TTL.
func TestWatchdogStartsWhenDue(t *testing.T) {
	b := &grantAll{refreshed: make(chan struct{}, 16)}
	c := New(b)
	ctx := t.Context()

	short, err := c.TryAcquire(ctx, "short", WithAutoRefresh(true), WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := short.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if watchdogStarted(short) {
		t.Error("a lock released long before its first refresh started a watchdog")
	}

	const ttl = 200 * time.Millisecond
	long, err := c.TryAcquire(ctx, "long", WithAutoRefresh(true), WithTTL(ttl), WithRefreshInterval(ttl/4))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 { // 8 refreshes: 400ms, twice the TTL
		select {
		case <-b.refreshed:
		case <-time.After(10 * time.Second): // bounds a broken watchdog; not a timing claim
			t.Fatalf("refresh %d never came", i+1)
		}
	}
	if !watchdogStarted(long) {
		t.Error("refreshed without a watchdog")
	}
	if err := long.Err(); err != nil {
		t.Errorf("lock refreshed past its TTL: Err = %v, want held", err)
	}
	if err := long.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-long.dogDone:
	default:
		t.Error("Release returned before the watchdog stopped")
	}
}
