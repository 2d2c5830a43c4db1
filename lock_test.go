package dlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

func TestNilLock(t *testing.T) {
	var l *dlock.Lock
	ctx := t.Context()
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Release = %v, want ErrNotHeld", err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh = %v, want ErrNotHeld", err)
	}
	select {
	case <-l.Done():
	default:
		t.Error("Done is open")
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Err = %v, want ErrNotHeld", err)
	}
	if lc := l.Context(); lc.Err() == nil || !errors.Is(context.Cause(lc), dlock.ErrNotHeld) {
		t.Errorf("Context: err %v, cause %v; want cancelled with ErrNotHeld", lc.Err(), context.Cause(lc))
	}
	if l.Key() != "" || l.Token() != "" || l.LockID() != "" || l.Fence() != 0 || l.Remaining() != 0 ||
		!l.ValidUntil().IsZero() || l.Record() != (dlock.Record{}) {
		t.Error("accessors of a nil lock return non-zero values")
	}
}

func TestLockAccessors(t *testing.T) {
	c, _, mem := newFaulty(t)
	key := uniqueKey(t)
	l := mustTry(t, c, key)
	rec, found, err := mem.Inspect(t.Context(), key)
	if err != nil || !found {
		t.Fatalf("Inspect: %v, %v", found, err)
	}
	if l.Key() != key || l.LockID() != rec.LockID || l.Fence() != rec.Fence || l.Record() != rec {
		t.Errorf("lock = key %q id %s fence %d record %+v; store has %+v", l.Key(), l.LockID(), l.Fence(), l.Record(), rec)
	}
	if tok := l.Token(); len(tok) != 32 || dlock.LockID(tok) != l.LockID() {
		t.Errorf("Token %q: want 32 hex digits whose LockID is %s", tok, l.LockID())
	}
	if l2 := mustTry(t, c, uniqueKey(t)); l2.Token() == l.Token() {
		t.Error("two grants share a token")
	}
}

// Validity runs from the moment the request was sent: a slow reply eats
// into it instead of extending it.
func TestValidityFromSend(t *testing.T) {
	c, f, _ := newFaulty(t)
	const ttl, slow = time.Second, 100 * time.Millisecond
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{Delay: slow, After: true, Times: 1})
	before := time.Now()
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(ttl))
	after := time.Now()
	if after.Sub(before) < slow {
		t.Fatalf("the injected delay did not happen")
	}
	if v := l.ValidUntil(); !v.Before(after.Add(ttl-slow)) || v.Before(before.Add(ttl*9/10)) {
		t.Errorf("ValidUntil = send%+v; want within [send+%v, reply+%v)", v.Sub(before), ttl*9/10, ttl-slow)
	}

	f.Inject(dlocktest.OpRefresh, dlocktest.Fault{Delay: slow, After: true, Times: 1})
	before = time.Now()
	if err := l.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	after = time.Now()
	if v := l.ValidUntil(); !v.Before(after.Add(ttl-slow)) || v.Before(before.Add(ttl*9/10)) {
		t.Errorf("after Refresh, ValidUntil = send%+v; want within [send+%v, reply+%v)", v.Sub(before), ttl*9/10, ttl-slow)
	}
}

func TestValidityTimer(t *testing.T) {
	c, _, _ := newFaulty(t)
	const ttl = 100 * time.Millisecond
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(ttl))
	if r := l.Remaining(); r <= 0 || r > ttl {
		t.Errorf("Remaining = %v, want within (0, %v]", r, ttl)
	}
	if st, _ := c.Stats(t.Context()); st.Held != 1 {
		t.Errorf("Held = %d before the lock was lost", st.Held)
	}
	waitDone(t, l)
	if now := time.Now(); now.Before(l.ValidUntil()) {
		t.Errorf("Done fired %v before ValidUntil", l.ValidUntil().Sub(now))
	}
	err := l.Err()
	if !errors.Is(err, dlock.ErrLockLost) || errors.Is(err, dlock.ErrMaxHold) || errors.Is(err, dlock.ErrReleased) {
		t.Errorf("Err = %v, want ErrLockLost for passed validity", err)
	}
	if r := l.Remaining(); r != 0 {
		t.Errorf("Remaining after loss = %v", r)
	}
	// A lost lock is no longer counted as held.
	if st, _ := c.Stats(t.Context()); st.Held != 0 {
		t.Errorf("Held = %d after the lock was lost", st.Held)
	}
}

// The watchdog keeps a lock past its TTL until the maximum hold time: the
// lost signal then says ErrMaxHold, which proves the validity timer never
// fired in between.
func TestWatchdogMaxHold(t *testing.T) {
	c, f, mem := newFaulty(t)
	const ttl, maxHold = 200 * time.Millisecond, 500 * time.Millisecond
	start := time.Now()
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(ttl), dlock.WithAutoRefresh(true),
		dlock.WithRefreshInterval(ttl/5), dlock.WithMaxHold(maxHold))
	waitDone(t, l)
	if held := time.Since(start); held < maxHold {
		t.Errorf("lock given up after %v, before the max hold of %v", held, maxHold)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrMaxHold) || !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrMaxHold (and ErrLockLost)", err)
	}
	if n := f.Calls(dlocktest.OpRefresh); n < int(maxHold/ttl) {
		t.Errorf("watchdog refreshed %d times in %v with TTL %v", n, maxHold, ttl)
	}
	// Release still frees the lease in the store, and says it was not
	// held to the end.
	if err := l.Release(t.Context()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Release after max hold = %v, want ErrNotHeld", err)
	}
	if _, found, _ := mem.Inspect(t.Context(), l.Key()); found {
		t.Error("lease still in the store after Release")
	}
}

// A watchdog whose refreshes keep failing (store unreachable) does not hide
// it: the lost signal fires when validity passes.
func TestWatchdogRefreshFailing(t *testing.T) {
	c, f, mem := newFaulty(t)
	const ttl = 150 * time.Millisecond
	f.Inject(dlocktest.OpRefresh, dlocktest.Fault{})
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(ttl), dlock.WithAutoRefresh(true))
	valid := l.ValidUntil()
	waitDone(t, l)
	if now := time.Now(); now.Before(valid) {
		t.Errorf("Done fired %v before the validity passed", valid.Sub(now))
	}
	if l.ValidUntil() != valid {
		t.Errorf("ValidUntil moved from %v to %v although every refresh failed", valid, l.ValidUntil())
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) || errors.Is(err, dlock.ErrMaxHold) {
		t.Errorf("Err = %v, want ErrLockLost", err)
	}
	if n := f.Calls(dlocktest.OpRefresh); n < 2 {
		t.Errorf("watchdog tried %d refreshes; it should retry a failed one", n)
	}
	f.Clear(dlocktest.OpRefresh)
	_ = l.Release(t.Context())
	if _, found, _ := mem.Inspect(t.Context(), l.Key()); found {
		t.Error("lease still in the store after Release")
	}
}

func TestRefreshErrors(t *testing.T) {
	ctx := t.Context()
	c, f, mem := newFaulty(t)
	l := mustTry(t, c, uniqueKey(t))

	// A store error is not a loss: the lock stays valid.
	f.Inject(dlocktest.OpRefresh, dlocktest.Fault{Times: 1})
	err := l.Refresh(ctx)
	if !errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh with the store down = %v, want ErrUnavailable", err)
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err after a failed refresh = %v, want nil", err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Errorf("Refresh after the store came back = %v", err)
	}

	// A refresh that finds the lease gone is a loss.
	if err := mem.Release(ctx, l.Key(), l.Token()); err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of a vanished lease = %v, want ErrNotHeld", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrLockLost", err)
	}
}

func TestRelease(t *testing.T) {
	ctx := t.Context()
	c, f, mem := newFaulty(t)
	l := mustTry(t, c, uniqueKey(t), dlock.WithAutoRefresh(true))
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, l)
	if err := l.Err(); !errors.Is(err, dlock.ErrReleased) || errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err after Release = %v, want ErrReleased", err)
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, dlock.ErrReleased) {
		t.Errorf("Context cause = %v", cause)
	}
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("second Release = %v, want ErrNotHeld", err)
	}
	if n := f.Calls(dlocktest.OpRelease); n != 1 {
		t.Errorf("backend Release called %d times, want 1", n)
	}

	// A store error on release: the caller hears it, the lock counts as
	// released locally, and the lease is left to its TTL.
	l = mustTry(t, c, uniqueKey(t))
	f.Inject(dlocktest.OpRelease, dlocktest.Fault{Times: 1})
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("Release with the store down = %v, want ErrUnavailable", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrReleased) {
		t.Errorf("Err = %v, want ErrReleased", err)
	}
	if _, found, _ := mem.Inspect(ctx, l.Key()); !found {
		t.Error("the lease vanished although the release never reached the store")
	}
}

// TestReleaseKeeps: with a min hold, an early release sets the lease to
// what is left of the min hold (plus the drift margin) instead of freeing
// it: on a backend that is not a Keeper through Refresh, on a Keeper
// through Keep. A store error on the way is the caller's to hear, and the
// lease keeps its TTL.
// ReleaseToken: with a keepUntil in the future the key stays taken until
// then (through Keep where the backend has it); with none, or one that has
// passed, it is released; a token that does not hold the key is refused.
func TestReleaseToken(t *testing.T) {
	ctx := t.Context()
	keeper := &keepCounter{Backend: memlock.New()}
	c := dlock.New(keeper)
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(time.Minute))
	until := time.Now().Add(time.Hour)
	kept, err := c.ReleaseToken(ctx, l.Key(), l.Token(), until)
	if err != nil || !kept || keeper.keeps != 1 {
		t.Fatalf("ReleaseToken before keepUntil = %v, %v with %d Keep calls; want kept, nil, 1", kept, err, keeper.keeps)
	}
	rec, found, err := keeper.Inspect(ctx, l.Key())
	if err != nil || !found || rec.ExpiresAt.Before(until) || rec.ExpiresAt.After(until.Add(time.Minute)) {
		t.Errorf("kept lease = %+v, found %v, %v; want it to end just after %v", rec, found, err, until)
	}
	if kept, err := c.ReleaseToken(ctx, l.Key(), l.Token(), time.Now().Add(-time.Second)); err != nil || kept {
		t.Errorf("ReleaseToken after keepUntil = %v, %v; want released", kept, err)
	}
	if _, found, _ := keeper.Inspect(ctx, l.Key()); found {
		t.Error("the key is still taken after ReleaseToken with a past keepUntil")
	}
	if _, err := c.ReleaseToken(ctx, l.Key(), l.Token(), time.Time{}); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("ReleaseToken of a released token = %v, want ErrNotHeld", err)
	}
	other := mustTry(t, c, uniqueKey(t))
	if _, err := c.ReleaseToken(ctx, other.Key(), l.Token(), until); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("ReleaseToken keeping with a wrong token = %v, want ErrNotHeld", err)
	}
}

func TestReleaseKeeps(t *testing.T) {
	ctx := t.Context()
	const hold = time.Hour
	c, f, mem := newFaulty(t)
	granted := time.Now()
	l := mustTry(t, c, uniqueKey(t), dlock.WithTTL(time.Minute), dlock.WithMinHold(hold))
	if err := l.Release(ctx); err != nil {
		t.Fatalf("early Release = %v", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrReleased) {
		t.Errorf("Err after an early release = %v, want ErrReleased", err)
	}
	if r, k := f.Calls(dlocktest.OpRelease), f.Calls(dlocktest.OpRefresh); r != 0 || k != 1 {
		t.Errorf("backend Release called %d times and Refresh %d, want 0 and 1", r, k)
	}
	rec, found, err := mem.Inspect(ctx, l.Key())
	if err != nil || !found {
		t.Fatalf("Inspect after an early release = found %v, %v", found, err)
	}
	if left := rec.ExpiresAt.Sub(granted); left < hold || left > hold+hold/50 {
		t.Errorf("kept lease ends %v after the grant, want %v plus the drift margin", left, hold)
	}

	keeper := &keepCounter{Backend: memlock.New()}
	l = mustTry(t, dlock.New(keeper), uniqueKey(t), dlock.WithMinHold(hold))
	if err := l.Release(ctx); err != nil || keeper.keeps != 1 {
		t.Errorf("early Release on a Keeper = %v with %d Keep calls, want nil and 1", err, keeper.keeps)
	}
	if _, found, _ := keeper.Inspect(ctx, l.Key()); !found {
		t.Error("Keep did not keep the lease")
	}

	l = mustTry(t, c, uniqueKey(t), dlock.WithTTL(time.Minute), dlock.WithMinHold(hold))
	f.Inject(dlocktest.OpRefresh, dlocktest.Fault{Times: 1})
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("early Release with the store down = %v, want ErrUnavailable", err)
	}
	if rec, found, _ := mem.Inspect(ctx, l.Key()); !found || time.Until(rec.ExpiresAt) > time.Minute {
		t.Errorf("after a failed keep the lease is found %v, expiring %v: want its own TTL", found, rec.ExpiresAt)
	}
}

// keepCounter is a backend that is a Keeper: Keep counts and refreshes.
type keepCounter struct {
	dlock.Backend
	keeps int
}

func (k *keepCounter) Keep(ctx context.Context, key, token string, ttl time.Duration) error {
	k.keeps++
	_, err := k.Refresh(ctx, key, token, ttl)
	return err
}

// TestValidityTimerManyLocks: the locks of one client, of different TTLs
// and taken out of order, each lose validity at their own time, never
// before; one released first says so, not that it was lost.
func TestValidityTimerManyLocks(t *testing.T) {
	c, _, _ := newFaulty(t)
	ttls := []time.Duration{150 * time.Millisecond, 60 * time.Millisecond, 250 * time.Millisecond, 100 * time.Millisecond}
	locks := make([]*dlock.Lock, len(ttls))
	for i, ttl := range ttls {
		locks[i] = mustTry(t, c, uniqueKey(t), dlock.WithTTL(ttl))
	}
	released := mustTry(t, c, uniqueKey(t), dlock.WithTTL(20*time.Millisecond))
	if err := released.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Stats(t.Context()); st.Held != len(ttls) {
		t.Errorf("Held = %d, want %d", st.Held, len(ttls))
	}
	for i, l := range locks {
		waitDone(t, l)
		if now := time.Now(); now.Before(l.ValidUntil()) {
			t.Errorf("lock %d (TTL %v): Done fired %v before ValidUntil", i, ttls[i], l.ValidUntil().Sub(now))
		}
		if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
			t.Errorf("lock %d (TTL %v): Err = %v, want ErrLockLost", i, ttls[i], err)
		}
	}
	if err := released.Err(); !errors.Is(err, dlock.ErrReleased) || errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("released lock: Err = %v, want ErrReleased", err)
	}
	if st, _ := c.Stats(t.Context()); st.Held != 0 {
		t.Errorf("Held = %d after every lock was lost, want 0", st.Held)
	}
}
