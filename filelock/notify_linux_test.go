package filelock

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// TestSubscribeWakesOnReleaseOnly checks the inotify path alone, with the
// periodic wake-up pushed out of reach and changes made through another
// Backend (as by another process): a release or break of the key wakes the
// subscriber; a grant, a refresh, or anything done to another key does not.
//
// inotify events arrive in order through one reader, so a wake-up of a
// marker key released after the quiet operations proves that any event
// they caused has been dispatched: if the key's channel is empty then, they
// woke nobody.
func TestSubscribeWakesOnReleaseOnly(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	waiter, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	waiter.watch.poll = time.Hour
	other, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	holder := dlock.New(other, dlock.WithTTL(time.Hour))
	key := t.Name() + "/key"

	subscribe := func(k string) <-chan struct{} {
		ch, cancel, err := waiter.Subscribe(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel)
		return ch
	}
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no wake-up after %s", what)
		}
	}
	var keyCh <-chan struct{} // the waiter's channel for key
	// quiet runs op, then proves it woke nobody watching key.
	quiet := func(what string, op func()) {
		t.Helper()
		marker := t.Name() + "/marker/" + what
		m, err := holder.TryAcquire(ctx, marker)
		if err != nil {
			t.Fatal(err)
		}
		markerCh := subscribe(marker)
		op()
		if err := m.Release(ctx); err != nil {
			t.Fatal(err)
		}
		wait(markerCh, "the marker's release")
		select {
		case <-keyCh:
			t.Fatalf("%s woke the waiter", what)
		default:
		}
	}

	keyCh = subscribe(key)
	var l *dlock.Lock
	quiet("grant", func() {
		if l, err = holder.TryAcquire(ctx, key); err != nil {
			t.Fatal(err)
		}
	})
	quiet("refresh", func() {
		if err := l.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
	})
	quiet("another key's release", func() {
		u, err := holder.TryAcquire(ctx, t.Name()+"/unrelated")
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wait(keyCh, "the release")

	if _, err := holder.TryAcquire(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, found, err := dlock.New(other).Break(ctx, key); err != nil || !found {
		t.Fatalf("Break = found %v, err %v", found, err)
	}
	wait(keyCh, "the break")
}
