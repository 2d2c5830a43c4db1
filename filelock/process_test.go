//go:build linux

package filelock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/fence"
	"github.com/dlock-dev/dlock/internal/proctest"
)

// The cross-process tests re-execute this test binary as children in a
// role (internal/proctest); TestMain runs the role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	ctx := context.Background()
	b, err := filelock.New(os.Getenv("DIR"))
	if err != nil {
		return err
	}
	key := os.Getenv("KEY")
	c, err := proctest.Client(b)
	if err != nil {
		return err
	}
	switch role {
	case "pause":
		return pause(ctx, b, c, key, stdin)
	case "wait":
		l, err := c.Acquire(ctx, key)
		if err != nil {
			return err
		}
		fmt.Println("acquired", l.Fence())
		stdin.Scan() // "release"
		if err := l.Release(ctx); err != nil {
			return err
		}
		fmt.Println("released")
		return nil
	}
	return proctest.Serve(ctx, b, role, stdin)
}

// pause holds key and waits for "go" on stdin; the parent stops it with
// SIGSTOP meanwhile, takes the key after the TTL and continues it. It then
// reports what each use of its lost lock gave.
func pause(ctx context.Context, b *filelock.Backend, c *dlock.Client, key string, stdin *bufio.Scanner) error {
	res, err := fence.Open(os.Getenv("RESOURCE"))
	if err != nil {
		return err
	}
	l, err := c.TryAcquire(ctx, key)
	if err != nil {
		return err
	}
	if err := res.Write(ctx, l.Fence(), []byte("before the pause")); err != nil {
		return err
	}
	fmt.Println("acquired", l.Fence())
	stdin.Scan()
	fmt.Println("backend-refresh", outcome(func() error { _, err := b.Refresh(ctx, key, l.Token(), time.Minute); return err }()))
	fmt.Println("refresh", outcome(l.Refresh(ctx)))
	fmt.Println("write", outcome(res.Write(ctx, l.Fence(), []byte("after the pause"))))
	fmt.Println("release", outcome(l.Release(ctx)))
	fmt.Println("backend-release", outcome(b.Release(ctx, key, l.Token())))
	return nil
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, dlock.ErrNotHeld):
		return "not-held"
	case errors.Is(err, fence.ErrStaleFence):
		return "stale-fence"
	default:
		return "error: " + err.Error()
	}
}

func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 20 processes")
	}
	proctest.RunContention(t, 20, 15, "DIR="+t.TempDir(), "KEY="+uniqueKey(t), "TTL=1m")
}

// TestKilledHolderFreedAtTTL: with takeover disabled, a SIGKILLed holder's
// lock is taken no earlier than its TTL and no later than a generous bound
// after it.
func TestKilledHolderFreedAtTTL(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	key := uniqueKey(t)
	const ttl, bound = time.Second, 3 * time.Second
	b, err := filelock.New(dir, filelock.WithDeadHolderTakeover(false))
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	h := proctest.Start(t, "hold", "DIR="+dir, "KEY="+key, "TTL="+ttl.String())
	held, _ := strconv.ParseUint(h.Expect("acquired"), 10, 64)
	reported := time.Now()
	h.Kill()
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	if _, err := c.TryAcquire(ctx, key); time.Since(reported) < ttl/2 && !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire right after the kill = %v, want ErrNotAcquired (takeover is disabled)", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*bound)
	defer cancel()
	l, err := c.Acquire(waitCtx, key)
	if err != nil {
		t.Fatal(err)
	}
	if since := time.Since(started); since < ttl {
		t.Errorf("granted %v after the holder started, before its TTL of %v", since, ttl)
	}
	if since := time.Since(reported); since > bound {
		t.Errorf("granted %v after the holder acquired, want within %v", since, bound)
	}
	if l.Fence() <= held {
		t.Errorf("fence %d after the killed holder's %d", l.Fence(), held)
	}
}

// TestKilledHolderTakenOverAtOnce: with takeover on (the default), the lock
// of a SIGKILLed holder is free as soon as the process is gone, long before
// its TTL.
func TestKilledHolderTakenOverAtOnce(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	key := uniqueKey(t)
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := proctest.Start(t, "hold", "DIR="+dir, "KEY="+key, "TTL=1h")
	h.Expect("acquired")
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	if _, err := c.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire while the holder lives = %v, want ErrNotAcquired", err)
	}
	h.Kill()
	if _, err := c.TryAcquire(ctx, key); err != nil {
		t.Fatalf("TryAcquire after the holder was killed and reaped = %v, want a grant", err)
	}
}

// TestWaiterTakesOverKilledHolder: a waiter blocked in Acquire gets the
// lock soon after the holder is killed, although the holder's lease runs
// for an hour and its death writes nothing to the file.
func TestWaiterTakesOverKilledHolder(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	key := uniqueKey(t)
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := proctest.Start(t, "hold", "DIR="+dir, "KEY="+key, "TTL=1h")
	h.Expect("acquired")
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	type result struct {
		l   *dlock.Lock
		err error
	}
	got := make(chan result, 1)
	waitCtx, cancel := context.WithTimeout(ctx, proctest.LineTimeout)
	defer cancel()
	go func() {
		l, err := c.Acquire(waitCtx, key)
		got <- result{l, err}
	}()
	h.Kill()
	if r := <-got; r.err != nil {
		t.Fatalf("Acquire waiting on a killed holder = %v, want a grant", r.err)
	}
}

// TestPausedHolderIsFenced: a holder stopped past its TTL loses the lock;
// when it continues, refresh and release fail with ErrNotHeld and the
// fenced resource refuses its write.
func TestPausedHolderIsFenced(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	key := uniqueKey(t)
	res, err := fence.Open(filepath.Join(t.TempDir(), "resource"))
	if err != nil {
		t.Fatal(err)
	}
	h := proctest.Start(t, "pause", "DIR="+dir, "KEY="+key, "TTL=300ms", "RESOURCE="+res.Path())
	old, _ := strconv.ParseUint(h.Expect("acquired"), 10, 64)
	if err := h.Process().Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Waiting for the lock is the synchronisation: it is granted once the
	// stopped holder's lease has expired.
	l, err := dlock.New(b, dlock.WithTTL(time.Minute)).Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if l.Fence() <= old {
		t.Fatalf("new fence %d not above the paused holder's %d", l.Fence(), old)
	}
	if err := res.Write(ctx, l.Fence(), []byte("new holder")); err != nil {
		t.Fatal(err)
	}
	if err := h.Process().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	h.Send("go")
	for _, want := range []struct{ step, outcome string }{
		{"backend-refresh", "not-held"},
		{"refresh", "not-held"},
		{"write", "stale-fence"},
		{"release", "not-held"},
		{"backend-release", "not-held"},
	} {
		if got := h.Expect(want.step); got != want.outcome {
			t.Errorf("paused holder's %s: %s, want %s", want.step, got, want.outcome)
		}
	}
	if err := h.Wait(); err != nil {
		t.Errorf("helper: %v", err)
	}
	// The new holder is unaffected.
	if err := l.Refresh(ctx); err != nil {
		t.Errorf("new holder's Refresh = %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("new holder's Release = %v", err)
	}
}
