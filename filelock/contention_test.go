//go:build linux

package filelock_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
)

// holdFileLock takes the flock of key's file the way another process's
// operation would, until the test ends or the returned func is called.
func holdFileLock(t *testing.T, dir, key string) (unlock func()) {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	fd, err := unix.Open(filepath.Join(dir, hex.EncodeToString(sum[:])+".lock"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	closed := false
	unlock = func() {
		if !closed {
			closed = true
			unix.Close(fd)
		}
	}
	t.Cleanup(unlock)
	return unlock
}

// A waiter that finds the key file busy must not queue for its lock while
// a live lease is visible: it answers "held" from a lockless look. (A crowd
// of waiters queueing there starves the holder's refresh.)
func TestAcquireAnswersHeldWhileFileBusy(t *testing.T) {
	dir := t.TempDir()
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	holder, err := c.TryAcquire(t.Context(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	holdFileLock(t, dir, "busy")

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rec, granted, err := b.Acquire(ctx, dlock.AcquireRequest{Key: "busy", Token: "0123456789abcdef0123456789abcdef", LockID: "x", TTL: time.Minute})
	if err != nil || granted {
		t.Fatalf("Acquire with the file busy = granted %v, err %v; want held, no error", granted, err)
	}
	if rec.LockID != holder.LockID() || rec.Fence != holder.Fence() {
		t.Fatalf("holder reported as %+v, want lock id %s fence %d", rec, holder.LockID(), holder.Fence())
	}
}

// The lockless look is only ever a reason to say "held": a free key whose
// file is busy is not granted until the file's lock can be taken.
func TestAcquireWaitsForFileLockWhenFree(t *testing.T) {
	dir := t.TempDir()
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	l, err := c.TryAcquire(t.Context(), "free")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	unlock := holdFileLock(t, dir, "free")

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, granted, err := b.Acquire(ctx, dlock.AcquireRequest{Key: "free", Token: "0123456789abcdef0123456789abcdef", LockID: "x", TTL: time.Minute})
	if granted || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire of a free key with the file busy = granted %v, err %v; want no grant and DeadlineExceeded", granted, err)
	}

	unlock()
	rec, granted, err := b.Acquire(t.Context(), dlock.AcquireRequest{Key: "free", Token: "0123456789abcdef0123456789abcdef", LockID: "x", TTL: time.Minute})
	if err != nil || !granted || rec.Fence != l.Fence()+1 {
		t.Fatalf("Acquire after the file was unlocked = %+v granted %v err %v; want a grant with fence %d", rec, granted, err, l.Fence()+1)
	}
}
