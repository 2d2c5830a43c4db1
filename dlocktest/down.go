package dlocktest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// CheckStoreDown is for a backend's test after it stopped the store that
// c's backend talks to: every operation of c, and of held (a lock c took
// before), must fail with an error wrapping [dlock.ErrUnavailable], never
// claim an answer ([dlock.ErrNotHeld]), and return within within.
// Operations the backend does not offer ([dlock.ErrUnsupported]) are
// skipped. held is released last, after a refresh and a break of its key.
// A caller whose deadline has passed gets its context's error, not
// ErrUnavailable. If watched is not nil (a lock c took with a short TTL
// and [dlock.WithAutoRefresh]), its lost signal must fire within within.
func CheckStoreDown(t *testing.T, c *dlock.Client, held, watched *dlock.Lock, within time.Duration) {
	t.Helper()
	key, other := held.Key(), held.Key()+"-other"
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

	if watched == nil {
		return
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
