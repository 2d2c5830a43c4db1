package redislock_test

import (
	"errors"
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

// GiveBack frees the key as Release does, but publishes nothing, so no
// waiter is woken for it; Release publishes once.
func TestGiveBackWakesNobody(t *testing.T) {
	ctx := t.Context()
	rdb := newDirectClient(t, startRedis(t).Addr)
	b := newBackend(t, rdb, redislock.WithPrefix(uniquePrefix()))
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	publishes := func() int { return commandCalls(t, rdb)["publish"] }

	l, err := c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	before := publishes()
	if err := b.GiveBack(ctx, "k", l.Token()); err != nil {
		t.Fatal(err)
	}
	if _, found, err := b.Inspect(ctx, "k"); err != nil || found {
		t.Errorf("after GiveBack the key is found %v (%v), want free", found, err)
	}
	if n := publishes() - before; n != 0 {
		t.Errorf("GiveBack published %d times, want 0", n)
	}
	if err := b.GiveBack(ctx, "k", l.Token()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("second GiveBack = %v, want ErrNotHeld", err)
	}

	l, err = c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	before = publishes()
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := publishes() - before; n != 1 {
		t.Errorf("Release published %d times, want 1", n)
	}
}
