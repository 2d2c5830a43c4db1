package filelock

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// TestSubscribeWakesOnRelease checks the inotify path alone: with the
// periodic wake-up pushed out of reach, a release through another Backend
// (as by another process) must still wake the subscriber, and a write to
// another key must not.
func TestSubscribeWakesOnRelease(t *testing.T) {
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
	key, unrelated := t.Name()+"/key", t.Name()+"/unrelated"
	holder := dlock.New(other, dlock.WithTTL(time.Hour))
	l, err := holder.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := waiter.Subscribe(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	u, err := holder.TryAcquire(ctx, unrelated)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// The unrelated writes are done; had they woken us, the value would
	// be waiting in the buffered channel by the time our own event is.
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after the release")
	}
	select {
	case <-ch:
		t.Error("a second wake-up: the unrelated key's writes woke the waiter")
	default:
	}
}
