package filelock

import (
	"bytes"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

// TestSubscribeWakesOnReleaseOnly checks the inotify path alone, with the
// periodic wake-up pushed out of reach and changes made through another
// Backend (as by another process): a release or break of the key wakes the
// subscriber, and so does a keep (WithMinHold) that shortens the lease; a
// grant, a refresh, a keep that lengthens it, or anything done to another
// key does not.
//
// inotify events arrive in order through one reader, so a wake-up of a
// marker key released after the quiet operations proves that any event
// they caused has been dispatched: if the key's channel is empty then, they
// woke nobody.
// waiterAndHolder returns two Backends on one directory, as two processes
// would have: a waiter whose periodic wake-up is pushed out of reach, and
// another whose client (TTL an hour) changes keys.
func waiterAndHolder(t *testing.T) (dir string, waiter, other *Backend, holder *dlock.Client) {
	t.Helper()
	dir = t.TempDir()
	waiter, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	waiter.watch.poll = time.Hour
	other, err = New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, waiter, other, dlock.New(other, dlock.WithTTL(time.Hour))
}

// waitWake fails t unless ch receives within 10s.
func waitWake(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake-up after %s", what)
	}
}

func TestSubscribeWakesOnReleaseOnly(t *testing.T) {
	ctx := t.Context()
	_, waiter, other, holder := waiterAndHolder(t)
	var err error
	key := t.Name() + "/key"

	subscribe := func(k string) <-chan struct{} {
		ch, cancel, err := waiter.Subscribe(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel)
		// A new subscription starts with a wake-up: the waiter looks once
		// more, in case of a release before it subscribed.
		select {
		case <-ch:
		default:
			t.Fatalf("subscription to %s: no first wake-up", k)
		}
		return ch
	}
	wait := func(ch <-chan struct{}, what string) { t.Helper(); waitWake(t, ch, what) }
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

	// A release with a min hold keeps the lease (Keep): quiet when that
	// makes it longer, a wake-up when it ends sooner than waiters were told.
	quiet("a keep that makes the lease longer", func() {
		k, err := holder.TryAcquire(ctx, key, dlock.WithMinHold(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := k.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if _, found, err := dlock.New(other).Break(ctx, key); err != nil || !found {
		t.Fatalf("Break of the kept lease = found %v, err %v", found, err)
	}
	wait(keyCh, "the second break")
	k, err := holder.TryAcquire(ctx, key, dlock.WithMinHold(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wait(keyCh, "a keep that shortens the lease")
}

// TestReleaseTouchesTimesOnlyForWaiters checks that a release touches the
// key file's times (IN_ATTRIB) only while a waiter, here in another
// Backend, holds the file's wait mark, and that the mark follows the key
// to a new file after cleanup deleted the marked one.
func TestReleaseTouchesTimesOnlyForWaiters(t *testing.T) {
	ctx := t.Context()
	dir, waiter, other, holder := waiterAndHolder(t)
	key := t.Name() + "/key"
	id := keyID(key)
	name := id.name()

	// A raw inotify instance of our own counts the IN_ATTRIB events.
	in, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no inotify:", err)
		}
		t.Skip("no inotify:", err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, dir, unix.IN_ATTRIB); err != nil {
		t.Fatal(err)
	}
	attribs := func() int {
		n := 0
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			k, err := unix.Read(in, buf)
			if err != nil {
				return n
			}
			for off := 0; off+unix.SizeofInotifyEvent <= k; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nb := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if string(bytes.TrimRight(nb, "\x00")) == name {
					n++
				}
			}
		}
	}
	pair := func() {
		t.Helper()
		l, err := holder.TryAcquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(ch <-chan struct{}, what string) { t.Helper(); waitWake(t, ch, what) }

	pair()
	if n := attribs(); n != 0 {
		t.Fatalf("a release without waiters touched the file's times (%d IN_ATTRIB)", n)
	}

	ch, cancel, err := waiter.Subscribe(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wait(ch, "the subscription (its first look)")
	pair()
	wait(ch, "the release")
	if n := attribs(); n != 1 {
		t.Fatalf("a release with a waiter: %d IN_ATTRIB, want 1", n)
	}

	// Cleanup deletes the (free) file: the waiter wakes, and marks the
	// file the next acquire creates.
	if _, err := other.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	wait(ch, "the cleanup")
	pair()
	wait(ch, "the release after the cleanup")

	cancel()
	attribs()
	pair()
	if n := attribs(); n != 0 {
		t.Fatalf("a release after the waiter left touched the file's times (%d IN_ATTRIB)", n)
	}
}
