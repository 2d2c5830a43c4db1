package dlocktest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

func acquireRequest(key, token string) dlock.AcquireRequest {
	return dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Minute}
}

func TestFaultyPassesThrough(t *testing.T) {
	ctx := t.Context()
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	if _, ok := dlock.Backend(f).(dlock.Notifier); ok {
		t.Error("Faulty exposes Notifier; it documents that it hides capabilities")
	}
	rec, granted, err := f.Acquire(ctx, acquireRequest("k", "t1"))
	if err != nil || !granted || rec.Key != "k" {
		t.Fatalf("Acquire = %+v, %v, %v", rec, granted, err)
	}
	if _, found, err := f.Inspect(ctx, "k"); err != nil || !found {
		t.Fatalf("Inspect = %v, %v", found, err)
	}
	if _, err := f.Refresh(ctx, "k", "t1", time.Minute); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	if err := f.Release(ctx, "k", "t1"); err != nil {
		t.Fatalf("Release = %v", err)
	}
	for op, want := range map[dlocktest.Op]int{
		dlocktest.OpAcquire: 1, dlocktest.OpInspect: 1, dlocktest.OpRefresh: 1, dlocktest.OpRelease: 1,
	} {
		if got := f.Calls(op); got != want {
			t.Errorf("Calls(%v) = %d, want %d", op, got, want)
		}
	}
}

func TestFaultyBefore(t *testing.T) {
	ctx := t.Context()
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	errDown := errors.New("connection refused")
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{Err: errDown, Times: 2})
	for i := range 2 {
		if _, _, err := f.Acquire(ctx, acquireRequest("k", "t1")); !errors.Is(err, errDown) {
			t.Errorf("call %d: %v, want the injected error", i+1, err)
		}
	}
	if _, found, _ := mem.Inspect(ctx, "k"); found {
		t.Error("a call failing before the store reached it")
	}
	// Times ran out: the operation healed by itself.
	if _, granted, err := f.Acquire(ctx, acquireRequest("k", "t1")); err != nil || !granted {
		t.Errorf("third call = %v, %v; want a grant", granted, err)
	}
	if n := f.Calls(dlocktest.OpAcquire); n != 3 {
		t.Errorf("Calls = %d, want 3", n)
	}

	f.Inject(dlocktest.OpRelease, dlocktest.Fault{}) // default error, until cleared
	for range 3 {
		if err := f.Release(ctx, "k", "t1"); !errors.Is(err, dlock.ErrUnavailable) {
			t.Errorf("Release = %v, want ErrUnavailable", err)
		}
	}
	f.Clear(dlocktest.OpRelease)
	if err := f.Release(ctx, "k", "t1"); err != nil {
		t.Errorf("Release after Clear = %v", err)
	}
}

func TestFaultyAfter(t *testing.T) {
	ctx := t.Context()
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	f.Inject(dlocktest.OpAcquire, dlocktest.Fault{After: true})
	if _, _, err := f.Acquire(ctx, acquireRequest("k", "t1")); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("Acquire = %v, want ErrUnavailable", err)
	}
	if _, found, _ := mem.Inspect(ctx, "k"); !found {
		t.Error("a call failing after the store should have taken effect")
	}
}

func TestFaultyDelay(t *testing.T) {
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	f.Inject(dlocktest.OpInspect, dlocktest.Fault{Delay: 20 * time.Millisecond})
	start := time.Now()
	if _, _, err := f.Inspect(t.Context(), "k"); err != nil {
		t.Errorf("slow Inspect = %v, want success", err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("slow Inspect took %v", d)
	}

	f.Inject(dlocktest.OpInspect, dlocktest.Fault{Delay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := f.Inspect(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Inspect past its deadline = %v, want DeadlineExceeded", err)
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[dlocktest.Op]string{
		dlocktest.OpAcquire: "acquire", dlocktest.OpRefresh: "refresh",
		dlocktest.OpRelease: "release", dlocktest.OpInspect: "inspect", dlocktest.Op(9): "Op(9)",
	} {
		if got := op.String(); got != want {
			t.Errorf("String = %q, want %q", got, want)
		}
	}
}
