package dlocktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-dev/dlock"
)

func (s *suite) cases() []testCase {
	return []testCase{
		{"mutual exclusion", testMutualExclusion},
		{"try-acquire of a held key names the holder", testNotAcquired},
		{"expiry frees the key", testExpiry},
		{"refresh extends the lease", testRefreshExtends},
		{"refresh after expiry fails and fires Done", testRefreshAfterExpiry},
		{"release needs the token", testReleaseWrongToken},
		{"double release", testDoubleRelease},
		{"release after expiry", testReleaseAfterExpiry},
		{"release after takeover keeps the new holder", testReleaseAfterTakeover},
		{"fence grows", testFence},
		{"waiter is woken by release", testWaitWokenByRelease},
		{"waiting ends on cancel", testWaitCancel},
		{"waiting ends at deadline", testWaitDeadline},
		{"waiting ends at max wait", testWaitMaxWait},
		{"lost signal at expiry", testLostOnExpiry},
		{"watchdog keeps the lock", testWatchdog},
		{"invalid keys", testInvalidKeys},
		{"invalid ttls", testInvalidTTLs},
		{"awkward but valid keys", testAwkwardKeys},
		{"inspect", testInspect},
		{"list", testList},
		{"stats", testStats},
		{"cleanup", testCleanup},
		{"break", testBreak},
		{"release all", testReleaseAll},
		{"min hold keeps the key after an early release", testMinHold},
		{"min hold is over: release frees at once", testMinHoldOver},
		{"min hold does not keep a broken lock", testMinHoldBroken},
		{"min hold that shortens the lease wakes waiters", testMinHoldWakes},
		{"refresh that shortens the lease wakes waiters", testRefreshShorterWakes},
		{"do runs fn under the lock", testDo},
		{"do releases on error", testDoError},
		{"do releases on panic", testDoPanic},
		{"do cancels fn when the lock is broken", testDoBroken},
		{"do does not run fn without the lock", testDoContended},
	}
}

func testMutualExclusion(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("counter")
	const workers = 100
	var (
		inside   atomic.Int32
		overlaps atomic.Int64
		grants   atomic.Int64
		waited   atomic.Int64 // grants to waiters, which must all succeed
		counter  int          // deliberately not atomic: the lock guards it
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range workers {
		wg.Go(func() {
			<-start
			c := e.c1
			if i%4 >= 2 {
				c = e.c2
			}
			wait := i%2 == 0
			var l *dlock.Lock
			var err error
			if wait {
				l, err = c.Acquire(ctx, key, dlock.WithMaxWait(e.patience),
					dlock.WithRetry(dlock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond)))
			} else {
				l, err = c.TryAcquire(ctx, key)
			}
			if err != nil {
				var nae *dlock.NotAcquiredError
				if !wait && errors.As(err, &nae) && nae.Holder != nil {
					return // lost the race, as most non-waiters do
				}
				t.Errorf("worker %d (wait=%v): %v", i, wait, err)
				return
			}
			grants.Add(1)
			if wait {
				waited.Add(1)
			}
			entered := inside.CompareAndSwap(0, 1)
			if !entered {
				overlaps.Add(1)
			}
			counter++
			runtime.Gosched() // give an overlapping holder a chance to show
			if entered {
				inside.Store(0)
			}
			if err := l.Release(ctx); err != nil {
				t.Errorf("worker %d: release: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d grants overlapped another holder", n)
	}
	if int64(counter) != grants.Load() {
		t.Errorf("counter = %d after %d grants: increments were lost", counter, grants.Load())
	}
	if waited.Load() != workers/2 {
		t.Errorf("%d of %d waiting workers got the lock", waited.Load(), workers/2)
	}
	e.assertFree(key)
}

func testNotAcquired(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("held")
	host, _ := os.Hostname()
	owner := dlock.Owner{Host: host, PID: os.Getpid(), Label: "dlocktest holder"}
	holder := e.acquire(e.c1, key, dlock.WithOwner(owner))
	if holder.LockID() == "" || holder.LockID() != dlock.LockID(holder.Token()) {
		t.Fatalf("LockID = %q, want dlock.LockID(token)", holder.LockID())
	}

	_, err := e.c2.TryAcquire(ctx, key)
	if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire of a held key: %v, want ErrNotAcquired", err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("TryAcquire of a held key matches a context error: %v", err)
	}
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) {
		t.Fatalf("TryAcquire error %T is not a *dlock.NotAcquiredError", err)
	}
	if nae.Key != key {
		t.Errorf("NotAcquiredError.Key = %q, want %q", nae.Key, key)
	}
	h := nae.Holder
	if h == nil {
		t.Fatal("NotAcquiredError.Holder is nil")
	}
	if h.Key != key || h.LockID != holder.LockID() {
		t.Errorf("holder = key %q lock %s, want key %q lock %s", h.Key, h.LockID, key, holder.LockID())
	}
	if h.Owner != owner {
		t.Errorf("holder owner = %+v, want %+v", h.Owner, owner)
	}
	if h.Fence != holder.Fence() {
		t.Errorf("holder fence = %d, want %d", h.Fence, holder.Fence())
	}
	if h.ExpiresAt.IsZero() {
		t.Error("holder ExpiresAt is not set")
	}
	js, err2 := json.Marshal(h)
	if err2 != nil {
		t.Fatal(err2)
	}
	token := holder.Token()
	for what, s := range map[string]string{
		"error message":      err.Error(),
		"holder record":      fmt.Sprintf("%+v", *h),
		"holder record JSON": string(js),
	} {
		if strings.Contains(s, token) {
			t.Errorf("%s reveals the holder's token: %s", what, s)
		}
	}

	// The backend contract: contention is not an error.
	other := "0123456789abcdef0123456789abcdef"
	rec, granted, err := e.b.Acquire(ctx, dlock.AcquireRequest{
		Key: key, Token: other, LockID: dlock.LockID(other), TTL: time.Minute, Owner: owner,
	})
	if err != nil || granted {
		t.Fatalf("Backend.Acquire of a held key = granted %v, err %v; want false, nil", granted, err)
	}
	if rec.LockID != holder.LockID() {
		t.Errorf("Backend.Acquire of a held key reported lock %s, want the holder's %s", rec.LockID, holder.LockID())
	}
	e.assertHeldBy(key, holder.LockID())
	e.release(holder)
}

func testExpiry(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("expiring")
	sent := time.Now()
	first := e.acquire(e.c1, key, dlock.WithTTL(e.short))
	e.assertHeldBy(key, first.LockID())
	e.assertContended(e.c2, key)

	second, err := e.c2.Acquire(ctx, key, dlock.WithMaxWait(e.patience))
	if err != nil {
		t.Fatalf("Acquire after the holder's TTL: %v", err)
	}
	// A lower bound only: the key must not have been granted long before
	// the holder's TTL (coarse stores may expire a little early).
	if got := time.Since(sent); got < e.short/2 {
		t.Errorf("second holder got the key %v after the first took it with TTL %v", got, e.short)
	}
	if second.Fence() <= first.Fence() {
		t.Errorf("fence after expiry %d, not above %d", second.Fence(), first.Fence())
	}
	e.assertHeldBy(key, second.LockID())
	e.release(second)

	// Inspect stops reporting an expired lease that nobody took over.
	other := e.key("expiring-alone")
	l := e.acquire(e.c1, other, dlock.WithTTL(e.short))
	if ok, err := e.c2.IsLocked(ctx, other); err != nil || !ok {
		t.Fatalf("IsLocked right after acquire = %v, %v; want true", ok, err)
	}
	e.waitExpired(other)
	if ok, err := e.c2.IsLocked(ctx, other); err != nil || ok {
		t.Errorf("IsLocked after expiry = %v, %v; want false", ok, err)
	}
	e.waitDone(l)
}

func testRefreshExtends(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("refreshed")
	ttl := 4 * e.short
	sent := time.Now()
	l := e.acquire(e.c1, key, dlock.WithTTL(ttl))
	fence, firstExpiry, firstValid := l.Fence(), l.Record().ExpiresAt, l.ValidUntil()

	sleepUntil(sent.Add(ttl / 2))
	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("Refresh halfway through the TTL: %v", err)
	}
	if !l.ValidUntil().After(firstValid) {
		t.Errorf("ValidUntil did not move: %v, was %v", l.ValidUntil(), firstValid)
	}
	if rec := l.Record(); !rec.ExpiresAt.After(firstExpiry) || rec.Fence != fence || rec.LockID != l.LockID() {
		t.Errorf("record after refresh = %+v; want a later expiry than %v, fence %d, lock %s",
			rec, firstExpiry, fence, l.LockID())
	}

	// Past the original TTL, the key is still held.
	sleepUntil(sent.Add(ttl + e.short/4))
	if remaining := l.Remaining(); remaining <= 0 {
		t.Fatalf("the test stalled past the refreshed validity; cannot judge")
	}
	e.assertContended(e.c2, key)
	e.assertHeldBy(key, l.LockID())
	if err := l.Err(); err != nil {
		t.Errorf("Err after refresh = %v, want nil", err)
	}
	e.release(l)
}

func testRefreshAfterExpiry(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("expired")
	l := e.acquire(e.c1, key, dlock.WithTTL(e.short))
	e.waitDone(l)
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) || errors.Is(err, dlock.ErrReleased) {
		t.Errorf("Err after validity passed = %v, want ErrLockLost", err)
	}
	e.waitExpired(key)
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Lock.Refresh after expiry: %v, want ErrNotHeld", err)
	}
	if _, err := e.b.Refresh(ctx, key, l.Token(), e.short); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Backend.Refresh after expiry: %v, want ErrNotHeld", err)
	}
	e.assertFree(key)

	// A lease gone from the store while the holder still believes in it:
	// the refresh that finds out fires Done.
	key2 := e.key("gone")
	l2 := e.acquire(e.c1, key2)
	if err := e.b.Release(ctx, key2, l2.Token()); err != nil {
		t.Fatalf("Backend.Release with the holder's token: %v", err)
	}
	if err := l2.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of a lease gone from the store: %v, want ErrNotHeld", err)
	}
	select {
	case <-l2.Done():
	default:
		t.Fatal("Done still open after a refresh found the lease gone")
	}
	if err := l2.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrLockLost", err)
	}
	e.assertFree(key2)
}

func testReleaseWrongToken(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("guarded")
	l := e.acquire(e.c1, key)
	wrong := "ffffffffffffffffffffffffffffffff"
	if err := e.b.Release(ctx, key, wrong); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Backend.Release with a wrong token: %v, want ErrNotHeld", err)
	}
	if _, err := e.b.Refresh(ctx, key, wrong, time.Minute); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Backend.Refresh with a wrong token: %v, want ErrNotHeld", err)
	}
	e.assertHeldBy(key, l.LockID())
	e.assertContended(e.c2, key)
	e.release(l)
	e.assertFree(key)
}

func testDoubleRelease(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("twice")
	l := e.acquire(e.c1, key)
	e.release(l)
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("second Lock.Release: %v, want ErrNotHeld", err)
	}
	if err := e.b.Release(ctx, key, l.Token()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Backend.Release of a released lease: %v, want ErrNotHeld", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrReleased) {
		t.Errorf("Err after release = %v, want ErrReleased", err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh after release: %v, want ErrNotHeld", err)
	}
	e.assertFree(key)
}

func testReleaseAfterExpiry(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("late")
	l := e.acquire(e.c1, key, dlock.WithTTL(e.short))
	e.waitDone(l)
	e.waitExpired(key)
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Lock.Release after expiry: %v, want ErrNotHeld", err)
	}
	if err := e.b.Release(ctx, key, l.Token()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Backend.Release after expiry: %v, want ErrNotHeld", err)
	}
}

func testReleaseAfterTakeover(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("taken-over")
	old := e.acquire(e.c1, key, dlock.WithTTL(e.short))
	e.waitExpired(key)
	taker := e.acquire(e.c2, key)
	if err := old.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("former holder's Release: %v, want ErrNotHeld", err)
	}
	if err := e.b.Release(ctx, key, old.Token()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("former holder's Backend.Release: %v, want ErrNotHeld", err)
	}
	if _, err := e.b.Refresh(ctx, key, old.Token(), time.Minute); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("former holder's Backend.Refresh: %v, want ErrNotHeld", err)
	}
	e.assertHeldBy(key, taker.LockID())
	e.assertContended(e.c1, key)
	e.release(taker)
}

func testFence(e *env) {
	t := e.t
	key := e.key("fenced")
	var fences []uint64
	grant := func(how string, opts ...dlock.Option) *dlock.Lock {
		t.Helper()
		l := e.acquire(e.c1, key, opts...)
		if l.Record().Fence != l.Fence() {
			t.Errorf("Record().Fence = %d, Fence() = %d", l.Record().Fence, l.Fence())
		}
		if n := len(fences); n > 0 && l.Fence() <= fences[n-1] {
			t.Errorf("fence %s = %d, not above the previous %d (all: %v)", how, l.Fence(), fences[n-1], fences)
		}
		fences = append(fences, l.Fence())
		return l
	}
	e.release(grant("first"))
	e.release(grant("after release"))
	grant("third", dlock.WithTTL(e.short))
	e.waitExpired(key)
	l := grant("after expiry", dlock.WithTTL(e.short))
	e.waitExpired(key)
	e.waitDone(l)
	if _, ok := e.b.(dlock.Cleaner); ok {
		if _, err := e.c1.Cleanup(t.Context()); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
	}
	e.release(grant("after expiry and cleanup"))
	// Another client, as another process would be.
	l = e.acquire(e.c2, key)
	if l.Fence() <= fences[len(fences)-1] {
		t.Errorf("fence from another client = %d, not above %d", l.Fence(), fences[len(fences)-1])
	}
	e.release(l)
}

func testWaitWokenByRelease(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("awaited")
	holder := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	watched, denied := WatchDenials(e.b)
	waiter := dlock.New(watched)
	t.Cleanup(func() { _, _ = waiter.ReleaseAll(context.Background()) })

	type result struct {
		l   *dlock.Lock
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The bound is far below the holder's TTL, so a grant can only
		// come from the release.
		l, err := waiter.Acquire(ctx, key, dlock.WithMaxWait(e.patience))
		done <- result{l, err}
	}()
	select {
	case <-denied:
	case r := <-done:
		t.Fatalf("waiter returned (%v) while the key was held", r.err)
	case <-time.After(e.patience):
		t.Fatal("waiter never tried the key")
	}
	e.release(holder)
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	if r.l.Fence() <= holder.Fence() {
		t.Errorf("waiter's fence %d not above the holder's %d", r.l.Fence(), holder.Fence())
	}
	e.assertHeldBy(key, r.l.LockID())
	e.release(r.l)
}

// startWaiter starts an Acquire of the held key through a watcher and
// returns once it has been refused at least once, with a channel for its
// result.
func (e *env) startWaiter(ctx context.Context, key string, opts ...dlock.Option) <-chan error {
	e.t.Helper()
	watched, denied := WatchDenials(e.b)
	waiter := dlock.New(watched)
	done := make(chan error, 1)
	go func() {
		l, err := waiter.Acquire(ctx, key, opts...)
		if err == nil {
			_ = l.Release(context.Background())
		}
		done <- err
	}()
	select {
	case <-denied:
	case <-time.After(e.patience):
		e.t.Fatal("waiter never tried the key")
	}
	return done
}

// checkWaitEnded checks the error of a wait that ended without a grant.
func (e *env) checkWaitEnded(err error, cause error, holder *dlock.Lock) {
	e.t.Helper()
	if !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, cause) {
		e.t.Fatalf("ended wait: %v; want ErrNotAcquired and %v", err, cause)
	}
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) {
		e.t.Fatalf("ended wait: %T is not a *dlock.NotAcquiredError", err)
	}
	if nae.Holder != nil && nae.Holder.LockID != holder.LockID() {
		e.t.Errorf("ended wait names lock %s, want the holder %s", nae.Holder.LockID, holder.LockID())
	}
	e.assertHeldBy(holder.Key(), holder.LockID())
}

func testWaitCancel(e *env) {
	t := e.t
	key := e.key("cancelled")
	holder := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	ctx, cancel := context.WithCancel(t.Context())
	done := e.startWaiter(ctx, key)
	cancel()
	select {
	case err := <-done:
		e.checkWaitEnded(err, context.Canceled, holder)
	case <-time.After(e.patience):
		t.Fatal("waiter did not return after its context was cancelled")
	}

	// A context cancelled before the call.
	_, err := e.c2.Acquire(ctx, key)
	e.checkWaitEnded(err, context.Canceled, holder)
	e.release(holder)
}

func testWaitDeadline(e *env) {
	t := e.t
	key := e.key("deadline")
	holder := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	ctx, cancel := context.WithTimeout(t.Context(), e.short)
	defer cancel()
	_, err := e.c2.Acquire(ctx, key)
	e.checkWaitEnded(err, context.DeadlineExceeded, holder)
	e.release(holder)
}

func testWaitMaxWait(e *env) {
	t := e.t
	key := e.key("max-wait")
	holder := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	start := time.Now()
	_, err := e.c2.Acquire(t.Context(), key, dlock.WithMaxWait(e.short))
	e.checkWaitEnded(err, context.DeadlineExceeded, holder)
	if got := time.Since(start); got < e.short {
		t.Errorf("WithMaxWait(%v) gave up after %v", e.short, got)
	}
	e.release(holder)
}

func testLostOnExpiry(e *env) {
	t := e.t
	key := e.key("lost")
	l := e.acquire(e.c1, key, dlock.WithTTL(e.short))
	if l.Remaining() <= 0 || l.Remaining() > e.short {
		t.Errorf("Remaining = %v right after acquire with TTL %v", l.Remaining(), e.short)
	}
	e.waitDone(l)
	// The signal may fire early (drift) but never before the validity
	// the lock reported.
	if now := time.Now(); now.Before(l.ValidUntil()) {
		t.Errorf("Done closed %v before ValidUntil", l.ValidUntil().Sub(now))
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err = %v, want ErrLockLost", err)
	}
	if cause := context.Cause(l.Context()); !errors.Is(cause, dlock.ErrLockLost) {
		t.Errorf("Context cause = %v, want ErrLockLost", cause)
	}
	if r := l.Remaining(); r != 0 {
		t.Errorf("Remaining after loss = %v", r)
	}
}

func testWatchdog(e *env) {
	t := e.t
	key := e.key("watched")
	// What is tested is that refreshes keep the lock across several TTLs,
	// not a short expiry: at least 600 ms, so that a refresh every third
	// of it is not late on a loaded 2-core machine (with 150 ms, one was,
	// in CI beside two busy loops).
	ttl := max(e.short, 600*time.Millisecond)
	start := time.Now()
	l := e.acquire(e.c1, key, dlock.WithTTL(ttl), dlock.WithAutoRefresh(true))
	lost := func() {
		select {
		case <-l.Done():
			t.Fatalf("watched lock lost after %v: %v", time.Since(start), l.Err())
		default:
		}
	}
	// Hold for several TTLs while another client keeps trying.
	tick := time.NewTicker(ttl / 6)
	defer tick.Stop()
	for time.Since(start) < 4*ttl {
		select {
		case <-l.Done():
		case <-tick.C:
		}
		// A lock lost meanwhile is reported as such, not as the other
		// client's grant that follows from it.
		lost()
		e.assertContended(e.c2, key)
	}
	e.assertHeldBy(key, l.LockID())
	if err := l.Err(); err != nil {
		t.Fatalf("Err after %v = %v", time.Since(start), err)
	}
	e.release(l)
	e.assertFree(key)
}

func testInvalidKeys(e *env) {
	t, ctx := e.t, e.t.Context()
	for name, key := range map[string]string{
		"empty":         "",
		"1025 bytes":    strings.Repeat("k", dlock.MaxKeyLen+1),
		"invalid UTF-8": "bad\xff\xfekey",
		"NUL":           "a\x00b",
		"newline":       "a\nb",
		"DEL":           "a\x7fb",
		"C1 control":    "a\u0085b",
	} {
		if _, err := e.c1.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("TryAcquire(%s): %v, want ErrInvalidKey", name, err)
		}
		if _, err := e.c1.Acquire(ctx, key, dlock.WithMaxWait(e.short)); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("Acquire(%s): %v, want ErrInvalidKey", name, err)
		}
		if _, _, err := e.c1.Inspect(ctx, key); !errors.Is(err, dlock.ErrInvalidKey) {
			t.Errorf("Inspect(%s): %v, want ErrInvalidKey", name, err)
		}
		ran := false
		err := e.c1.Do(ctx, key, func(context.Context) error { ran = true; return nil })
		if !errors.Is(err, dlock.ErrInvalidKey) || ran {
			t.Errorf("Do(%s): %v, ran %v; want ErrInvalidKey and fn not run", name, err, ran)
		}
	}
}

func testInvalidTTLs(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("ttl")
	for _, ttl := range []time.Duration{0, -time.Second, dlock.MinTTL - time.Nanosecond, dlock.MaxTTL + time.Nanosecond} {
		if _, err := e.c1.TryAcquire(ctx, key, dlock.WithTTL(ttl)); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("TryAcquire with TTL %v: %v, want ErrInvalidTTL", ttl, err)
		}
		if _, err := dlock.New(e.b, dlock.WithTTL(ttl)).TryAcquire(ctx, key); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("TryAcquire on a client with default TTL %v: %v, want ErrInvalidTTL", ttl, err)
		}
	}
	e.assertFree(key)
}

func testAwkwardKeys(e *env) {
	t, ctx := e.t, e.t.Context()
	u := e.key("")[len(t.Name())+2:] // the unique suffix alone
	long := func(last byte) string {
		k := "long-" + u + "-" + strings.Repeat("λ", 200)
		return k + strings.Repeat("x", dlock.MaxKeyLen-len(k)-1) + string(last)
	}
	keys := []string{
		" " + u + " with spaces ",
		u + "/a/b",
		u + "/a",
		u + "/a/",
		"/" + u,
		"../" + u,
		"../../" + u + "/..",
		"./" + u,
		u + `\back\slash`,
		u + "%2F",
		u + "*?[]",
		"日本語-" + u + "-🔒",
		"Case-" + u,
		"case-" + u,
		long('a'),
		long('b'),
	}
	if len(long('a')) != dlock.MaxKeyLen {
		t.Fatalf("long key is %d bytes", len(long('a')))
	}
	locks := make(map[string]*dlock.Lock)
	for _, key := range keys {
		// If two keys shared a record, the second acquire would fail.
		locks[key] = e.acquire(e.c1, key)
	}
	for _, key := range keys {
		rec, found, err := e.c2.Inspect(ctx, key)
		if err != nil || !found {
			t.Errorf("Inspect(%q) = found %v, %v", key, found, err)
			continue
		}
		if rec.Key != key || rec.LockID != locks[key].LockID() {
			t.Errorf("Inspect(%q) = key %q lock %s, want lock %s", key, rec.Key, rec.LockID, locks[key].LockID())
		}
	}
	if _, ok := e.b.(dlock.Lister); ok {
		recs, err := e.c2.List(ctx, "")
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Key)
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("List(\"\") = %q, want %q", got, want)
		}
	}
	// Releasing one leaves the others held.
	e.release(locks[u+"/a"])
	e.assertFree(u + "/a")
	e.assertHeldBy(u+"/a/b", locks[u+"/a/b"].LockID())
	e.release(locks[long('a')])
	e.assertHeldBy(long('b'), locks[long('b')].LockID())
	e.release(locks["Case-"+u])
	e.assertHeldBy("case-"+u, locks["case-"+u].LockID())
	if n, err := e.c1.ReleaseAll(ctx); err != nil || n != len(keys)-3 {
		t.Errorf("ReleaseAll = %d, %v; want %d", n, err, len(keys)-3)
	}
}

func testInspect(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("inspected")
	if _, found, err := e.c1.Inspect(ctx, key); err != nil || found {
		t.Fatalf("Inspect of a free key = found %v, %v", found, err)
	}
	if ok, err := e.c1.IsLocked(ctx, key); err != nil || ok {
		t.Fatalf("IsLocked of a free key = %v, %v", ok, err)
	}
	l := e.acquire(e.c1, key, dlock.WithLabel("inspected"))
	rec, found, err := e.c2.Inspect(ctx, key)
	if err != nil || !found {
		t.Fatalf("Inspect of a held key = found %v, %v", found, err)
	}
	want := l.Record()
	if rec.Key != key || rec.LockID != want.LockID || rec.Fence != want.Fence || rec.Owner != want.Owner {
		t.Errorf("Inspect = %+v, want %+v", rec, want)
	}
	if rec.Owner.Label != "inspected" {
		t.Errorf("owner label = %q, want %q", rec.Owner.Label, "inspected")
	}
	if rec.ExpiresAt.IsZero() || (!rec.AcquiredAt.IsZero() && !rec.ExpiresAt.After(rec.AcquiredAt)) {
		t.Errorf("Inspect times: acquired %v, expires %v", rec.AcquiredAt, rec.ExpiresAt)
	}
	if ok, err := e.c2.IsLocked(ctx, key); err != nil || !ok {
		t.Errorf("IsLocked of a held key = %v, %v", ok, err)
	}
	e.release(l)
	if ok, err := e.c2.IsLocked(ctx, key); err != nil || ok {
		t.Errorf("IsLocked after release = %v, %v", ok, err)
	}
}

func testList(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.Lister); !ok {
		t.Skip("backend does not implement dlock.Lister")
	}
	p := e.key("list") + "/"
	in := []string{p + "b", p + "a", p + "c/d"}
	var locks []*dlock.Lock
	for _, k := range in {
		locks = append(locks, e.acquire(e.c1, k))
	}
	outside := e.acquire(e.c1, p[:len(p)-1]+"-other")
	released := e.acquire(e.c1, p+"released")
	e.release(released)
	expired := e.acquire(e.c1, p+"expired", dlock.WithTTL(e.short))
	e.waitExpired(expired.Key())

	keysOf := func(recs []dlock.Record) []string {
		var ks []string
		for _, r := range recs {
			ks = append(ks, r.Key)
		}
		return ks
	}
	recs, err := e.c2.List(ctx, p)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if got, want := keysOf(recs), []string{p + "a", p + "b", p + "c/d"}; !slices.Equal(got, want) {
		t.Errorf("List(%q) = %q, want %q", p, got, want)
	}
	for _, r := range recs {
		i := slices.Index(in, r.Key)
		if i >= 0 && r.LockID != locks[i].LockID() {
			t.Errorf("List: %q lock %s, want %s", r.Key, r.LockID, locks[i].LockID())
		}
	}
	all, err := e.c2.List(ctx, "")
	if err != nil {
		t.Fatalf("List all: %v", err)
	}
	got := keysOf(all)
	if !slices.IsSorted(got) {
		t.Errorf("List(\"\") not sorted: %q", got)
	}
	if want := []string{outside.Key(), p + "a", p + "b", p + "c/d"}; !slices.Equal(got, want) {
		t.Errorf("List(\"\") = %q, want %q", got, want)
	}
}

func testStats(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.StatsReporter); !ok {
		t.Skip("backend does not implement dlock.StatsReporter")
	}
	e.acquire(e.c1, e.key("a"))
	e.acquire(e.c1, e.key("b"))
	e.acquire(e.c2, e.key("c"))
	gone := e.acquire(e.c1, e.key("gone"))
	e.release(gone)
	expired := e.acquire(e.c1, e.key("expired"), dlock.WithTTL(e.short))
	e.waitDone(expired)
	e.waitExpired(expired.Key())

	st, err := e.c1.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.Active != 3 || st.Held != 2 || st.Total != st.Active+st.Expired || st.Expired > 1 {
		// The store may drop an expired record by itself (Expired 0).
		t.Errorf("Stats = %+v; want Active 3, Held 2, Expired 0 or 1, Total = Active+Expired", st)
	}
	st2, err := e.c2.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st2.Held != 1 || st2.Active != st.Active {
		t.Errorf("other client's Stats = %+v; want Held 1, Active %d", st2, st.Active)
	}
}

func testCleanup(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.Cleaner); !ok {
		t.Skip("backend does not implement dlock.Cleaner")
	}
	live := e.acquire(e.c1, e.key("live"))
	var expired []*dlock.Lock
	for i := range 2 {
		expired = append(expired, e.acquire(e.c1, e.key(fmt.Sprint("expired", i)), dlock.WithTTL(e.short)))
	}
	for _, l := range expired {
		e.waitExpired(l.Key())
	}
	reporter, counts := e.b.(dlock.StatsReporter)
	want := -1
	if counts {
		st, err := reporter.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		want = st.Expired
	}
	n, err := e.c1.Cleanup(ctx)
	if err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	// Fewer than Stats counted is no error: a store may drop an expired
	// record by itself in between (Redis expires a lease's keys each on its
	// own, up to a millisecond apart). None may be left: see below.
	switch {
	case counts && n > want:
		t.Errorf("Cleanup removed %d, but Stats counted only %d expired records", n, want)
	case n < 0 || n > len(expired):
		t.Errorf("Cleanup removed %d records; only %d had expired", n, len(expired))
	}
	if counts {
		st, err := reporter.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Expired != 0 || st.Active != 1 || st.Total != 1 {
			t.Errorf("Stats after Cleanup = %+v; want 1 active, none expired", st)
		}
	}
	e.assertHeldBy(live.Key(), live.LockID())
	if err := live.Refresh(ctx); err != nil {
		t.Errorf("Refresh of a live lock after Cleanup: %v", err)
	}
	if n, err := e.c1.Cleanup(ctx); err != nil || n != 0 {
		t.Errorf("second Cleanup = %d, %v; want 0", n, err)
	}
	e.release(live)
}

func testBreak(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.Breaker); !ok {
		t.Skip("backend does not implement dlock.Breaker")
	}
	key := e.key("broken")
	if _, found, err := e.c2.Break(ctx, key); err != nil || found {
		t.Fatalf("Break of a free key = found %v, %v", found, err)
	}
	l := e.acquire(e.c1, key)
	rec, found, err := e.c2.Break(ctx, key)
	if err != nil || !found {
		t.Fatalf("Break of a held key = found %v, %v", found, err)
	}
	if rec.LockID != l.LockID() || rec.Key != key {
		t.Errorf("Break returned key %q lock %s, want %q lock %s", rec.Key, rec.LockID, key, l.LockID())
	}
	e.assertFree(key)
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh of a broken lock: %v, want ErrNotHeld", err)
	}
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err of a broken lock after Refresh = %v, want ErrLockLost", err)
	}
	taker := e.acquire(e.c2, key)
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Release of a broken lock: %v, want ErrNotHeld", err)
	}
	e.assertHeldBy(key, taker.LockID())
	e.release(taker)
}

func testReleaseAll(e *env) {
	t, ctx := e.t, e.t.Context()
	var mine []*dlock.Lock
	for i := range 3 {
		mine = append(mine, e.acquire(e.c1, e.key(fmt.Sprint("mine", i))))
	}
	theirs := e.acquire(e.c2, e.key("theirs"))
	e.release(mine[0])
	mine = mine[1:]
	mine = append(mine, e.acquire(e.c1, e.key("late")))
	if st, _ := e.c1.Stats(ctx); st.Held != len(mine) {
		t.Errorf("Stats.Held = %d, want %d", st.Held, len(mine))
	}
	n, err := e.c1.ReleaseAll(ctx)
	if err != nil || n != len(mine) {
		t.Errorf("ReleaseAll = %d, %v; want %d, nil", n, err, len(mine))
	}
	for _, l := range mine {
		e.assertFree(l.Key())
		if !errors.Is(l.Err(), dlock.ErrReleased) {
			t.Errorf("lock %q: Err after ReleaseAll = %v", l.Key(), l.Err())
		}
	}
	e.assertHeldBy(theirs.Key(), theirs.LockID())
	if st, _ := e.c1.Stats(ctx); st.Held != 0 {
		t.Errorf("Stats.Held after ReleaseAll = %d", st.Held)
	}
	if n, err := e.c1.ReleaseAll(ctx); err != nil || n != 0 {
		t.Errorf("second ReleaseAll = %d, %v; want 0, nil", n, err)
	}
	e.release(theirs)
}

// testMinHold: a release before the minimum hold ends the hold for this
// client but leaves the key taken, until the minimum hold (well before the
// lease's TTL of a minute) has passed; Do's release does the same.
func testMinHold(e *env) {
	t, ctx := e.t, e.t.Context()
	hold := 4 * e.short
	for _, viaDo := range []bool{false, true} {
		key := e.key(fmt.Sprint("kept-do-", viaDo))
		opts := []dlock.Option{dlock.WithTTL(time.Minute), dlock.WithMinHold(hold)}
		sent := time.Now()
		var l *dlock.Lock
		if viaDo {
			err := e.c1.Do(ctx, key, func(context.Context) error {
				held, _ := e.c1.Stats(ctx)
				if held.Held != 1 {
					t.Errorf("Stats.Held inside Do = %d", held.Held)
				}
				return nil
			}, opts...)
			if err != nil {
				t.Fatalf("Do with a min hold: %v", err)
			}
		} else {
			l = e.acquire(e.c1, key, opts...)
			e.release(l)
			if err := l.Err(); !errors.Is(err, dlock.ErrReleased) {
				t.Errorf("Err after an early release = %v, want ErrReleased", err)
			}
		}
		if st, _ := e.c1.Stats(ctx); st.Held != 0 {
			t.Errorf("Stats.Held after an early release = %d, want 0", st.Held)
		}
		if l != nil {
			e.assertHeldBy(key, l.LockID())
		}
		e.assertContended(e.c2, key)

		next, err := e.c2.Acquire(ctx, key, dlock.WithMaxWait(e.patience))
		if err != nil {
			t.Fatalf("Acquire after the min hold %v of a lease with a TTL of 1m: %v", hold, err)
		}
		// A lower bound only, as in testExpiry.
		if got := time.Since(sent); got < hold/2 {
			t.Errorf("the key was free %v after the grant, before its min hold %v", got, hold)
		}
		e.release(next)
	}
}

// testMinHoldWakes: a waiter refused while the lease had a minute left is
// granted soon after the holder releases with a short min hold, not a
// minute later: the kept lease ends sooner than the waiter was told.
func testMinHoldWakes(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("kept-shorter")
	l := e.acquire(e.c1, key, dlock.WithTTL(time.Minute), dlock.WithMinHold(3*e.short))
	done := e.startWaiter(ctx, key, dlock.WithMaxWait(e.patience))
	e.release(l)
	if err := <-done; err != nil {
		t.Fatalf("waiter refused while the lease had 1m left, after a release with a min hold of %v: %v", 3*e.short, err)
	}
}

// testMinHoldOver: once the minimum hold has passed, a release frees the
// key at once.
// testRefreshShorterWakes: a waiter told the lease ends in a minute looks
// again when the holder shortens it (the CLI's refresh --ttl can), not a
// minute later.
func testRefreshShorterWakes(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("refreshed-shorter")
	l := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	done := e.startWaiter(ctx, key, dlock.WithMaxWait(e.patience))
	if _, err := e.b.Refresh(ctx, key, l.Token(), 3*e.short); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiter refused while the lease had 1m left, after a refresh to %v: %v", 3*e.short, err)
	}
}

func testMinHoldOver(e *env) {
	key := e.key("kept-briefly")
	l := e.acquire(e.c1, key, dlock.WithMinHold(time.Nanosecond))
	e.release(l)
	e.assertFree(key)
}

// testMinHoldBroken: a lock that was broken (and so lost) is not kept, and
// its release does not touch the new holder's lease.
func testMinHoldBroken(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.Breaker); !ok {
		t.Skip("backend does not implement dlock.Breaker")
	}
	key := e.key("kept-broken")
	l := e.acquire(e.c1, key, dlock.WithTTL(time.Minute), dlock.WithMinHold(time.Minute))
	if _, _, err := e.c2.Break(ctx, key); err != nil {
		t.Fatalf("Break: %v", err)
	}
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Release of a broken lock with a min hold: %v, want ErrNotHeld", err)
	}
	e.assertFree(key)
	taker := e.acquire(e.c2, key)
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("second Release: %v, want ErrNotHeld", err)
	}
	e.assertHeldBy(key, taker.LockID())
	e.release(taker)
}

func testDo(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("do")
	ran := false
	err := e.c1.Do(ctx, key, func(ctx context.Context) error {
		ran = true
		e.assertContended(e.c2, key)
		if ok, err := e.c2.IsLocked(ctx, key); err != nil || !ok {
			t.Errorf("IsLocked inside Do = %v, %v", ok, err)
		}
		if ctx.Err() != nil {
			t.Errorf("fn's context is done while the lock is held: %v", context.Cause(ctx))
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("Do = %v, ran %v", err, ran)
	}
	e.assertFree(key)
	if st, _ := e.c1.Stats(ctx); st.Held != 0 {
		t.Errorf("Stats.Held after Do = %d", st.Held)
	}
}

func testDoError(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("do-error")
	errFn := errors.New("fn failed")
	err := e.c1.Do(ctx, key, func(context.Context) error { return errFn })
	if !errors.Is(err, errFn) {
		t.Errorf("Do = %v, want fn's error", err)
	}
	if errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Do = %v: the lock was not lost", err)
	}
	e.assertFree(key)
}

func testDoPanic(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("do-panic")
	type boom struct{}
	func() {
		defer func() {
			if r := recover(); r != (boom{}) {
				t.Errorf("recovered %v, want fn's panic value", r)
			}
		}()
		_ = e.c1.Do(ctx, key, func(context.Context) error { panic(boom{}) })
		t.Error("Do returned instead of panicking")
	}()
	e.assertFree(key)
}

func testDoBroken(e *env) {
	t, ctx := e.t, e.t.Context()
	if _, ok := e.b.(dlock.Breaker); !ok {
		t.Skip("backend does not implement dlock.Breaker")
	}
	key := e.key("do-broken")
	var cause error
	err := e.c1.Do(ctx, key, func(ctx context.Context) error {
		if _, found, err := e.c2.Break(ctx, key); err != nil || !found {
			t.Errorf("Break = found %v, %v", found, err)
		}
		// The watchdog finds out at its next refresh, a third of the TTL.
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
			return cause
		case <-time.After(e.patience):
			return errors.New("fn's context was not cancelled")
		}
	}, dlock.WithTTL(e.short))
	if !errors.Is(cause, dlock.ErrLockLost) {
		t.Errorf("fn's context cause = %v, want ErrLockLost", cause)
	}
	if !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Do = %v, want ErrLockLost", err)
	}
	e.assertFree(key)
}

func testDoContended(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("do-held")
	holder := e.acquire(e.c2, key)
	ran := false
	err := e.c1.Do(ctx, key, func(context.Context) error { ran = true; return nil }, dlock.WithMaxWait(0))
	if !errors.Is(err, dlock.ErrNotAcquired) || ran {
		t.Errorf("Do on a held key = %v, ran %v; want ErrNotAcquired, fn not run", err, ran)
	}
	e.assertHeldBy(key, holder.LockID())
	e.release(holder)
}

// testFIFOOrder: waiters that queued one after another (each refused
// before the next starts) are granted in that order, one that gave up
// leaves its place, and a one-shot attempt does not pass the queue even at
// the moment of the release. A [dlock.QueueReporter] counts the waiters.
func testFIFOOrder(e *env) {
	t, ctx := e.t, e.t.Context()
	key := e.key("queued")
	holder := e.acquire(e.c1, key, dlock.WithTTL(time.Minute))
	type grant struct {
		i int
		l *dlock.Lock
	}
	const n = 5
	grants := make(chan grant, n)
	errs := make(chan error, n)
	var cancels [n]context.CancelFunc
	for i := range n {
		watched, denied := WatchDenials(e.b)
		c := dlock.New(watched, dlock.WithTTL(time.Minute), dlock.WithLabel(fmt.Sprintf("waiter %d", i)))
		wctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		t.Cleanup(cancel)
		t.Cleanup(func() { _, _ = c.ReleaseAll(context.Background()) })
		go func() {
			l, err := c.Acquire(wctx, key, dlock.WithMaxWait(e.patience))
			if err != nil {
				errs <- fmt.Errorf("waiter %d: %w", i, err)
				return
			}
			grants <- grant{i, l}
		}()
		select {
		case <-denied:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(e.patience):
			t.Fatalf("waiter %d never waited", i)
		}
	}
	q, counts := e.b.(dlock.QueueReporter)
	if counts {
		if got, err := q.Waiting(ctx, key); err != nil || got != n {
			t.Errorf("Waiting with %d waiters queued = %d, %v", n, got, err)
		}
	}
	cancels[2]()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	e.release(holder)
	// The key is now promised to waiter 0, or already its.
	if l, err := e.c2.TryAcquire(ctx, key); err == nil {
		t.Fatalf("TryAcquire at the release, with waiters queued, was granted (fence %d): it passed the queue", l.Fence())
	} else if !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire at the release, with waiters queued: %v, want ErrNotAcquired", err)
	}
	for _, want := range []int{0, 1, 3, 4} {
		select {
		case g := <-grants:
			if g.i != want {
				t.Fatalf("granted to waiter %d, want waiter %d: not first come, first served", g.i, want)
			}
			e.release(g.l) // the next one's turn
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(e.patience):
			t.Fatalf("waiter %d was not granted the key", want)
		}
	}
	if counts {
		// The cancelled waiter's ticket may leave in the background.
		deadline := time.Now().Add(e.patience)
		for {
			got, err := q.Waiting(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if got == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Waiting after every waiter was served = %d, want 0", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
