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
	h.add(first, first.validUntil)
	if !h.armed.Equal(at(time.Hour)) {
		t.Fatalf("armed %v after the first lock, want its validity", h.armed.Sub(now))
	}
	later := heldLock(c, "later", at(2*time.Hour))
	h.add(later, later.validUntil)
	if !h.armed.Equal(at(time.Hour)) {
		t.Errorf("armed %v after a later lock, want unchanged (1h)", h.armed.Sub(now))
	}
	first.lost(ErrReleased)
	if !h.armed.Equal(at(time.Hour)) {
		t.Errorf("armed %v after the earliest lock left, want unchanged (1h)", h.armed.Sub(now))
	}
	sooner := heldLock(c, "sooner", at(30*time.Minute))
	h.add(sooner, sooner.validUntil)
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
		h.add(l, l.validUntil)
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
