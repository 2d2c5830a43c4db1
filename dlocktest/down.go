package dlocktest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// CheckStoreDown checks a backend whose store goes away. Through c it
// takes key, and key+"-watched" with a TTL of a second and
// [dlock.WithAutoRefresh], then calls stop, which must stop the store c's
// backend talks to. Then every operation of c, and of the lock on key,
// must fail with an error wrapping [dlock.ErrUnavailable], never claim an
// answer ([dlock.ErrNotHeld]), and return within within. Operations the
// backend does not offer ([dlock.ErrUnsupported]) are skipped. The lock on
// key is released last, after a refresh and a break of its key. A caller
// whose deadline has passed gets its context's error, not ErrUnavailable.
// The watched lock's lost signal must fire within within, since its
// refreshes fail.
func CheckStoreDown(t *testing.T, c *dlock.Client, key string, stop func(), within time.Duration) {
	t.Helper()
	held, err := c.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	watched, err := c.TryAcquire(t.Context(), key+"-watched", dlock.WithTTL(time.Second), dlock.WithAutoRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	other := key + "-other"
	ops := []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"TryAcquire", func(ctx context.Context) error { _, err := c.TryAcquire(ctx, other); return err }},
		{"Acquire (waits)", func(ctx context.Context) error {
			_, err := c.Acquire(ctx, other, dlock.WithMaxWait(time.Second))
			return err
		}},
		{"Refresh", func(ctx context.Context) error { return held.Refresh(ctx) }},
		{"Inspect", func(ctx context.Context) error { _, _, err := c.Inspect(ctx, key); return err }},
		{"List", func(ctx context.Context) error { _, err := c.List(ctx, ""); return err }},
		{"Stats", func(ctx context.Context) error { _, err := c.Stats(ctx); return err }},
		{"Cleanup", func(ctx context.Context) error { _, err := c.Cleanup(ctx); return err }},
		{"Break", func(ctx context.Context) error { _, _, err := c.Break(ctx, key); return err }},
		{"Release", func(ctx context.Context) error { return held.Release(ctx) }},
	}
	for _, o := range ops {
		ctx, cancel := context.WithTimeout(t.Context(), within)
		start := time.Now()
		err := o.op(ctx)
		cancel()
		if errors.Is(err, dlock.ErrUnsupported) {
			continue
		}
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Errorf("%s with the store down: %v, want ErrUnavailable", o.name, err)
		}
		if errors.Is(err, dlock.ErrNotHeld) {
			t.Errorf("%s with the store down claims an answer: %v", o.name, err)
		}
		if d := time.Since(start); d > within {
			t.Errorf("%s took %v", o.name, d)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Microsecond)
	defer cancel()
	<-ctx.Done()
	if _, err := c.TryAcquire(ctx, other); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("TryAcquire past the caller's deadline: %v, want context.DeadlineExceeded", err)
	}

	select {
	case <-watched.Done():
		if err := watched.Err(); !errors.Is(err, dlock.ErrLockLost) {
			t.Errorf("Err of a lock whose refreshes fail = %v, want ErrLockLost", err)
		}
	case <-time.After(within):
		t.Errorf("a held lock whose refreshes fail did not fire its lost signal within %v", within)
	}
}
