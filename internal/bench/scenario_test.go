package bench

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/memlock"
)

// prefix gives each test its own keys.
func prefix(t *testing.T) string { return "bench-test/" + t.Name() + "/" }

func TestSerialCountsPairsAndStoreOps(t *testing.T) {
	s := Dlock("dlock", memlock.New())
	res, err := Run(t.Context(), Serial, s, Config{Ops: 100, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 100 || res.Workers != 1 || res.Scenario != Serial || res.Subject != "dlock" {
		t.Fatalf("result %+v, want 100 serial pairs by 1 worker of dlock", res)
	}
	// TryAcquire is one Acquire call and Release one Release call; a
	// single attempt never subscribes.
	if got := res.PerOp[CounterStoreOps]; got != 2 {
		t.Errorf("store ops per pair = %v, want 2", got)
	}
	if got := res.PerOp[CounterSubscribes]; got != 0 {
		t.Errorf("subscribes per pair = %v, want 0", got)
	}
	if res.PerSecond <= 0 || res.Latency.P50 <= 0 || res.Latency.P99 < res.Latency.P50 || res.Latency.Max < res.Latency.P99 {
		t.Errorf("implausible figures: %v/s, latency %+v", res.PerSecond, res.Latency)
	}
}

func TestParallelUsesDistinctKeys(t *testing.T) {
	res, err := Run(t.Context(), Parallel, Dlock("dlock", memlock.New()), Config{Ops: 300, Workers: 3, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 300 || res.Workers != 3 {
		t.Fatalf("ops %d workers %d, want 300 and 3", res.Ops, res.Workers)
	}
	// Three workers on one key would have failed attempts; a key each
	// never does.
	if got := res.PerOp[CounterStoreOps]; got != 2 {
		t.Errorf("store ops per pair = %v, want 2", got)
	}
}

func TestSerialFailsWhenKeyIsHeld(t *testing.T) {
	b := memlock.New()
	lock, err := dlock.New(b).TryAcquire(t.Context(), prefix(t)+"serial")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Release(context.Background()) })
	_, err = Run(t.Context(), Serial, Dlock("dlock", b), Config{Ops: 10, Prefix: prefix(t)})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "serial") {
		t.Fatalf("err = %v, want ErrBusy naming the key", err)
	}
}

func TestContendedExcludesAndCounts(t *testing.T) {
	// Each grant is held 2ms, so the other workers find the key held.
	res, err := Run(t.Context(), Contended, Dlock("dlock", memlock.New()), Config{Ops: 200, Workers: 4, Hold: 2 * time.Millisecond, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 {
		t.Fatalf("ops = %d, want 200", res.Ops)
	}
	if res.Violations != 0 || res.FenceRegressions != 0 {
		t.Fatalf("violations %d, fence regressions %d, want 0", res.Violations, res.FenceRegressions)
	}
	if res.MinGrants > res.MaxGrants || res.Fairness < 0 || res.Fairness > 1 {
		t.Errorf("grants min %d max %d fairness %v are inconsistent", res.MinGrants, res.MaxGrants, res.Fairness)
	}
	// Every grant is one successful Acquire and one Release; failed
	// attempts add more. A Lock call subscribes once if it finds the key
	// held, else not at all.
	if got := res.PerOp[CounterStoreOps]; got < 2 {
		t.Errorf("store ops per grant = %v, want >= 2", got)
	}
	if got := res.PerOp[CounterSubscribes]; got <= 0 || got > 1 {
		t.Errorf("subscribes per grant = %v, want in (0, 1]", got)
	}
}

func TestContendedStopsWaitersAtDuration(t *testing.T) {
	b := memlock.New()
	start := time.Now()
	res, err := Run(t.Context(), Contended, Dlock("dlock", b),
		Config{Duration: 50 * time.Millisecond, Workers: 3, Hold: time.Millisecond, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Elapsed < 50*time.Millisecond {
		t.Fatalf("ops %d in %v, want some grants in at least 50ms", res.Ops, res.Elapsed)
	}
	// Generous: waiters must be woken by the stop, not left to their
	// 10s lease or a timeout.
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("run took %v", took)
	}
	// The key is free afterwards: nothing was left held.
	if locked, err := dlock.New(b).IsLocked(t.Context(), prefix(t)+"contended"); err != nil || locked {
		t.Fatalf("IsLocked = %v, %v", locked, err)
	}
}

// brokenLocker grants every Lock at once: no exclusion at all.
type brokenLocker struct{ fence *atomic.Uint64 }

func (l brokenLocker) TryLock(context.Context, string) (Held, bool, error) {
	return brokenHeld{1}, true, nil
}

func (l brokenLocker) Lock(context.Context, string) (Held, error) {
	return brokenHeld{l.fence.Add(1)}, nil
}

type brokenHeld struct{ fence uint64 }

func (h brokenHeld) Fence() uint64                { return h.fence }
func (h brokenHeld) Unlock(context.Context) error { return nil }

func TestContendedDetectsViolations(t *testing.T) {
	var fence atomic.Uint64
	s := Subject{Name: "broken", NewLocker: func(int) (Locker, error) { return brokenLocker{&fence}, nil }}
	// Both workers wait inside the critical section until both are
	// there, which only a lock that does not exclude allows.
	var arrived sync.WaitGroup
	arrived.Add(2)
	var once [2]sync.Once
	cfg := Config{Ops: 10, Workers: 2, Prefix: prefix(t), critical: func(w int) {
		once[w].Do(func() { arrived.Done(); arrived.Wait() })
	}}
	res, err := Run(t.Context(), Contended, s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Violations == 0 {
		t.Fatalf("violations = 0 with two workers inside at once")
	}
}

// sameFenceLocker excludes (with a mutex) but repeats its fence.
type sameFenceLocker struct{ mu *sync.Mutex }

func (l sameFenceLocker) TryLock(ctx context.Context, key string) (Held, bool, error) {
	return nil, false, errors.New("unused")
}

func (l sameFenceLocker) Lock(context.Context, string) (Held, error) {
	l.mu.Lock()
	return mutexHeld{l.mu}, nil
}

type mutexHeld struct{ mu *sync.Mutex }

func (h mutexHeld) Fence() uint64                { return 7 }
func (h mutexHeld) Unlock(context.Context) error { h.mu.Unlock(); return nil }

func TestContendedDetectsFenceRegressions(t *testing.T) {
	var mu sync.Mutex
	s := Subject{Name: "stuck-fence", NewLocker: func(int) (Locker, error) { return sameFenceLocker{&mu}, nil }}
	res, err := Run(t.Context(), Contended, s, Config{Ops: 20, Workers: 2, Hold: -1, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Violations != 0 {
		t.Errorf("violations = %d under a mutex", res.Violations)
	}
	if res.FenceRegressions != 19 {
		t.Errorf("fence regressions = %d, want 19 (every grant after the first)", res.FenceRegressions)
	}
}

// drainingLocker is a sameFenceLocker with background work to wait for:
// Drain counts its calls and returns err.
type drainingLocker struct {
	sameFenceLocker
	drains *atomic.Int32
	err    error
}

func (l drainingLocker) Drain(context.Context) error { l.drains.Add(1); return l.err }

// A contended run waits for each worker's background work before it ends,
// and fails if that work does not finish.
func TestContendedDrainsLockers(t *testing.T) {
	for _, drainErr := range []error{nil, context.DeadlineExceeded} {
		var (
			mu     sync.Mutex
			drains atomic.Int32
		)
		s := Subject{Name: "draining", NewLocker: func(int) (Locker, error) {
			return drainingLocker{sameFenceLocker{&mu}, &drains, drainErr}, nil
		}}
		_, err := Run(t.Context(), Contended, s, Config{Ops: 10, Workers: 3, Hold: -1, Prefix: prefix(t)})
		if !errors.Is(err, drainErr) || (drainErr == nil) != (err == nil) {
			t.Errorf("Run with Drain returning %v = %v", drainErr, err)
		}
		if drainErr == nil && drains.Load() != 3 {
			t.Errorf("Drain called %d times, want once per worker (3)", drains.Load())
		}
	}
}

func TestRunReportsLockerErrors(t *testing.T) {
	boom := errors.New("boom")
	s := Subject{Name: "failing", NewLocker: func(i int) (Locker, error) {
		if i == 1 {
			return nil, boom
		}
		return brokenLocker{new(atomic.Uint64)}, nil
	}}
	if _, err := Run(t.Context(), Parallel, s, Config{Ops: 10, Workers: 2}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := Run(t.Context(), "nope", s, Config{}); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

func TestRunHonoursCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Run(ctx, Serial, Dlock("dlock", memlock.New()), Config{Duration: time.Minute, Prefix: prefix(t)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
