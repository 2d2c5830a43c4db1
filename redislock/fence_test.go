package redislock_test

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/redislock"
)

// RaiseFence lifts the counter, so that the next grant's fence is above
// the floor, and never lowers it.
func TestRaiseFence(t *testing.T) {
	ctx := t.Context()
	b := newBackend(t, newDirectClient(t, startRedis(t).Addr), redislock.WithPrefix(uniquePrefix()))
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	take := func() uint64 {
		t.Helper()
		l, err := c.TryAcquire(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		return l.Fence()
	}
	if f := take(); f != 1 {
		t.Fatalf("first fence %d, want 1", f)
	}
	if err := b.RaiseFence(ctx, "k", 100); err != nil {
		t.Fatal(err)
	}
	if f := take(); f != 101 {
		t.Errorf("fence after raising to 100 = %d, want 101", f)
	}
	if err := b.RaiseFence(ctx, "k", 5); err != nil {
		t.Fatal(err)
	}
	if f := take(); f != 102 {
		t.Errorf("fence after a raise to a lower floor = %d, want 102", f)
	}
}
