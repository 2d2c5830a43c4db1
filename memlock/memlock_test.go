package memlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

func TestConformance(t *testing.T) {
	dlocktest.Run(t, func(t *testing.T) dlock.Backend { return memlock.New() })
}

func request(key, token string, ttl time.Duration) dlock.AcquireRequest {
	return dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: ttl}
}

// memlock keeps expired records until Cleanup, so it counts them exactly.
func TestExpiredRecordsUntilCleanup(t *testing.T) {
	ctx := t.Context()
	b := memlock.New()
	for _, key := range []string{"a", "b"} {
		if _, ok, err := b.Acquire(ctx, request(key, "t-"+key, dlock.MinTTL)); !ok || err != nil {
			t.Fatalf("Acquire(%s) = %v, %v", key, ok, err)
		}
	}
	if _, ok, err := b.Acquire(ctx, request("live", "t-live", time.Hour)); !ok || err != nil {
		t.Fatalf("Acquire(live) = %v, %v", ok, err)
	}
	time.Sleep(2 * dlock.MinTTL) // let the short leases expire
	st, err := b.Stats(ctx)
	if err != nil || st != (dlock.Stats{Total: 3, Active: 1, Expired: 2}) {
		t.Errorf("Stats = %+v, %v; want 3 total, 1 active, 2 expired", st, err)
	}
	if n, err := b.Cleanup(ctx); n != 2 || err != nil {
		t.Errorf("Cleanup = %d, %v; want 2", n, err)
	}
	st, err = b.Stats(ctx)
	if err != nil || st != (dlock.Stats{Total: 1, Active: 1}) {
		t.Errorf("Stats after Cleanup = %+v, %v", st, err)
	}
	rec, ok, err := b.Acquire(ctx, request("a", "t-a2", time.Hour))
	if !ok || err != nil || rec.Fence != 2 {
		t.Errorf("Acquire after Cleanup = fence %d, %v, %v; want fence 2", rec.Fence, ok, err)
	}
}

func TestSubscribe(t *testing.T) {
	ctx := t.Context()
	b := memlock.New()
	changed, cancel, err := b.Subscribe(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	expectWake := func(what string, want bool) {
		t.Helper()
		select {
		case <-changed:
			if !want {
				t.Errorf("woken by %s", what)
			}
		default:
			if want {
				t.Errorf("not woken by %s", what)
			}
		}
	}
	// A new subscription starts with a wake-up, in case of a release
	// between the waiter's refusal and its subscription.
	expectWake("the subscription", true)
	if _, ok, _ := b.Acquire(ctx, request("k", "t1", time.Hour)); !ok {
		t.Fatal("not granted")
	}
	expectWake("acquire", false)
	if _, ok, _ := b.Acquire(ctx, request("other", "t1", time.Hour)); !ok {
		t.Fatal("not granted")
	}
	_ = b.Release(ctx, "other", "t1")
	expectWake("release of another key", false)
	_ = b.Release(ctx, "k", "wrong")
	expectWake("a refused release", false)
	_ = b.Release(ctx, "k", "t1")
	expectWake("release", true)

	_, _, _ = b.Acquire(ctx, request("k", "t2", time.Hour))
	_, _, _ = b.Break(ctx, "k")
	expectWake("break", true)

	_, _, _ = b.Acquire(ctx, request("k", "t3", dlock.MinTTL))
	time.Sleep(2 * dlock.MinTTL) // let it expire
	_, _ = b.Cleanup(ctx)
	expectWake("cleanup", true)

	cancel()
	_, _, _ = b.Acquire(ctx, request("k", "t4", time.Hour))
	_ = b.Release(ctx, "k", "t4")
	expectWake("release after cancel", false)
}

func TestCancelledContext(t *testing.T) {
	b := memlock.New()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]error{}
	_, _, calls["Acquire"] = b.Acquire(ctx, request("k", "t", time.Hour))
	_, calls["Refresh"] = b.Refresh(ctx, "k", "t", time.Hour)
	calls["Release"] = b.Release(ctx, "k", "t")
	_, _, calls["Inspect"] = b.Inspect(ctx, "k")
	_, calls["List"] = b.List(ctx, "")
	_, calls["Stats"] = b.Stats(ctx)
	_, calls["Cleanup"] = b.Cleanup(ctx)
	_, _, calls["Break"] = b.Break(ctx, "k")
	_, _, calls["Subscribe"] = b.Subscribe(ctx, "k")
	for name, err := range calls {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", name, err)
		}
	}
	if _, found, _ := b.Inspect(t.Context(), "k"); found {
		t.Error("a cancelled Acquire took the key")
	}
}
