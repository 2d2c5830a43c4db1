package filelock_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/internal/waitfor"
)

// The FIFO queue. Waiters join in a known order: each test waits until the
// key's record counts the new ticket (queue_next) before starting the next
// waiter, and finds who holds the key with Inspect (the owner's pid or
// label), so no sleep stands in for synchronisation.

// queueNext reads the key's record as people and tools would.
func queueNext(t *testing.T, dir, key string) uint64 {
	t.Helper()
	data, err := os.ReadFile(keyFile(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		QueueNext uint64 `json:"queue_next"`
	}
	// The record is the first line, as the backend reads it: it is read
	// here without the file's lock, and a rewrite in flight may leave the
	// end of the longer record it replaces after that line for a moment.
	line, _, _ := bytes.Cut(data, []byte("\n"))
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatalf("record %q: %v", data, err)
	}
	return rec.QueueNext
}

func waitQueued(t *testing.T, dir, key string, n uint64) {
	t.Helper()
	waitfor.Until(t, "ticket "+strconv.FormatUint(n-1, 10)+" is taken", func() bool { return queueNext(t, dir, key) >= n })
}

// stopOutsideFlock stops c's process (SIGSTOP) at a moment when it does
// not hold the flock of the key file at path. Stopped inside its short
// locked section, it would hold up every process that uses the key, which
// is not what the test is about: a waiter that has taken its ticket may
// still be finishing that section, or look at the key once more.
func stopOutsideFlock(t *testing.T, c *proctest.Child, path string) {
	t.Helper()
	waitfor.Until(t, "the process is stopped outside the key's flock", func() bool {
		if err := c.Process().Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		waitfor.Until(t, "every thread of the process has stopped", func() bool { return stopped(t, c.Pid()) })
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = c.Process().Signal(syscall.SIGCONT) // inside: let it finish
			return false
		}
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return true
	})
}

// stopped reports whether every thread of process pid is stopped.
func stopped(t *testing.T, pid int) bool {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/stat")
		if err != nil {
			return false // a thread that just exited
		}
		// The state follows the command name, which is in parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
			return false
		}
	}
	return true
}

// waitHolder waits until key is held by someone other than notPID and
// returns the lease.
func waitHolder(t *testing.T, b dlock.Backend, key string, notPID int) dlock.Record {
	t.Helper()
	var rec dlock.Record
	waitfor.Until(t, "the key has a new holder", func() bool {
		r, found, err := b.Inspect(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		rec = r
		return found && r.Owner.PID != notPID
	})
	return rec
}

// openBackend returns another Backend over dir, as another process would
// have.
func openBackend(t *testing.T, dir string) *filelock.Backend {
	t.Helper()
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// assertNoLifeLines fails t if a process still listens on the life line of
// one of the key's tickets.
func assertNoLifeLines(t *testing.T, dir, key string) {
	t.Helper()
	if left := lifeLinesLeft(t, dir, key); len(left) > 0 {
		t.Errorf("life lines left behind: %v", left)
	}
}

// lifeLinesLeft returns the life lines of the key's tickets that some
// process still listens on.
func lifeLinesLeft(t *testing.T, dir, key string) []string {
	t.Helper()
	names, err := filelock.LifeLines(keyFile(dir, key), queueNext(t, dir, key))
	if err != nil {
		t.Fatal(err)
	}
	table, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, n := range names {
		if strings.Contains(string(table), " "+n+"\n") {
			left = append(left, n)
		}
	}
	return left
}

// TestQueueOrderAcrossProcesses: waiters in four processes get the key in
// the order they asked for it, one killed while it waits holds up nobody
// (its place goes with its process), and no life line is left behind.
func TestQueueOrderAcrossProcesses(t *testing.T) {
	b, dir := newBackend(t)
	key := uniqueKey(t)
	l, err := dlock.New(b, dlock.WithTTL(time.Hour)).TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	var hs []*proctest.Child
	for i := range 4 {
		hs = append(hs, proctest.Start(t, "wait", "DIR="+dir, "KEY="+key, "TTL=1h"))
		waitQueued(t, dir, key, uint64(i+1))
	}
	hs[1].Kill()
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	prev := os.Getpid()
	for _, i := range []int{0, 2, 3} {
		rec := waitHolder(t, b, key, prev)
		if pid := hs[i].Pid(); rec.Owner.PID != pid {
			t.Fatalf("holder is pid %d, want waiter %d (pid %d): not first come, first served", rec.Owner.PID, i, pid)
		}
		hs[i].Expect("acquired")
		hs[i].Send("release")
		hs[i].Expect("released")
		prev = rec.Owner.PID
	}
	assertNoLifeLines(t, dir, key)
}

// TestStoppedFirstInLineIsPassed: a first in line that does not take the
// free key (its process is stopped) holds it up for the grace only; the
// key is promised to it meanwhile (a TryAcquire is refused, cleanup keeps
// the file), then the second takes it, and the first gets its turn once
// it continues.
func TestStoppedFirstInLineIsPassed(t *testing.T) {
	ctx := t.Context()
	b, dir := newBackend(t)
	key := uniqueKey(t)
	c := dlock.New(b, dlock.WithTTL(time.Hour))
	l, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	first := proctest.Start(t, "wait", "DIR="+dir, "KEY="+key, "TTL=1h")
	waitQueued(t, dir, key, 1)
	stopOutsideFlock(t, first, keyFile(dir, key))
	t.Cleanup(func() { _ = first.Process().Signal(syscall.SIGCONT) })
	second := proctest.Start(t, "wait", "DIR="+dir, "KEY="+key, "TTL=1h")
	waitQueued(t, dir, key, 2)
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}

	_, err = c.TryAcquire(ctx, key)
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) {
		t.Fatalf("TryAcquire with a queue = %v, want it refused", err)
	}
	if h := nae.Holder; h.LockID == "" && (h.Owner.Label != "next in the FIFO queue" || time.Until(h.ExpiresAt) > 2*time.Second) {
		t.Errorf("refused by %+v, want the first in line, passed within 2s", *h)
	}
	if _, err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if n := queueNext(t, dir, key); n < 2 {
		t.Fatalf("after cleanup the key's record has queue_next %d, want 2: cleanup removed the file of a key with a queue", n)
	}

	rec := waitHolder(t, b, key, os.Getpid())
	if pid := second.Pid(); rec.Owner.PID != pid {
		t.Fatalf("holder is pid %d, want the second in line (pid %d)", rec.Owner.PID, pid)
	}
	second.Expect("acquired")
	if err := first.Process().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	second.Send("release")
	second.Expect("released")
	rec = waitHolder(t, b, key, rec.Owner.PID)
	if pid := first.Pid(); rec.Owner.PID != pid {
		t.Fatalf("holder is pid %d, want the first in line, continued (pid %d)", rec.Owner.PID, pid)
	}
	first.Expect("acquired")
	first.Send("release")
	first.Expect("released")
}

// counting counts the attempts its waiters make.
type counting struct {
	*filelock.Backend
	attempts atomic.Int64
}

func (c *counting) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	c.attempts.Add(1)
	return c.Backend.Acquire(ctx, req)
}

// TestQueueInProcess: waiters on Backends of their own (as in separate
// processes) are granted in the order they came, one that gave up leaves
// its place, and those behind the first two make no attempt until their
// turn nears: their life lines wake them, not the key's events or a poll.
func TestQueueInProcess(t *testing.T) {
	ctx := t.Context()
	hb, dir := newBackend(t)
	key := uniqueKey(t)
	l, err := dlock.New(hb, dlock.WithTTL(time.Hour)).TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	var (
		backends [n]*counting
		cancels  [n]context.CancelFunc
		results  = make(chan int, n)
		errs     = make(chan error, n)
	)
	for i := range n {
		backends[i] = &counting{Backend: openBackend(t, dir)}
		c := dlock.New(backends[i], dlock.WithTTL(time.Hour), dlock.WithLabel(strconv.Itoa(i)))
		wctx, cancel := context.WithTimeout(ctx, proctest.LineTimeout)
		cancels[i] = cancel
		t.Cleanup(cancel)
		go func() {
			l, err := c.Acquire(wctx, key)
			if err != nil {
				errs <- err
				return
			}
			results <- i
			errs <- l.Release(ctx)
		}()
		waitQueued(t, dir, key, uint64(i+1))
	}
	cancels[2]()
	if err := <-errs; !errors.Is(err, dlock.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	for i := 3; i < n; i++ {
		if got := backends[i].attempts.Load(); got != 1 {
			t.Errorf("waiter %d, third or later in line, made %d attempts during the hold, want 1 (its refusal)", i, got)
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	want := []int{0, 1, 3, 4, 5}
	for _, w := range want {
		if got := <-results; got != w {
			t.Fatalf("granted to waiter %d, want %d: not first come, first served", got, w)
		}
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	assertNoLifeLines(t, dir, key)
}

// TestQueueAfterExpiry: a lease that ends unreleased (its holder, not tied
// to a process, went away) goes to the first in line, then the next: the
// first two in line look at the holder's expiry, the rest are woken by the
// ones ahead leaving.
func TestQueueAfterExpiry(t *testing.T) {
	ctx := t.Context()
	hb, dir := newBackend(t)
	key := uniqueKey(t)
	if _, err := dlock.New(hb, dlock.WithTTL(300*time.Millisecond), dlock.WithOwner(dlock.Owner{Label: "gone"})).TryAcquire(ctx, key); err != nil {
		t.Fatal(err)
	}
	const n = 3
	order := make(chan int, n)
	errs := make(chan error, n)
	for i := range n {
		c := dlock.New(openBackend(t, dir), dlock.WithTTL(time.Hour))
		go func() {
			l, err := c.Acquire(ctx, key, dlock.WithMaxWait(proctest.LineTimeout))
			if err != nil {
				errs <- err
				return
			}
			order <- i
			errs <- l.Release(ctx)
		}()
		waitQueued(t, dir, key, uint64(i+1))
	}
	for want := range n {
		if got := <-order; got != want {
			t.Fatalf("granted to waiter %d, want %d", got, want)
		}
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseLeavesQueue: a Backend closed while its waiter queues gives up
// its place (the waiter behind moves up) and its waiter still gets the
// key, later, as a waiter outside the queue.
func TestCloseLeavesQueue(t *testing.T) {
	ctx := t.Context()
	hb, dir := newBackend(t)
	key := uniqueKey(t)
	holder, err := dlock.New(hb, dlock.WithTTL(time.Hour)).TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	closing, behind := openBackend(t, dir), openBackend(t, dir)
	type result struct {
		who string
		err error
	}
	results := make(chan result, 2)
	wait := func(b *filelock.Backend, who string) {
		l, err := dlock.New(b, dlock.WithTTL(time.Hour)).Acquire(ctx, key, dlock.WithMaxWait(proctest.LineTimeout))
		if err == nil {
			err = l.Release(ctx)
		}
		results <- result{who, err}
	}
	go wait(closing, "closed")
	waitQueued(t, dir, key, 1)
	go wait(behind, "behind")
	waitQueued(t, dir, key, 2)
	if err := closing.Close(); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	first := <-results
	if first.err != nil || first.who != "behind" {
		t.Fatalf("first grant: %+v, want the waiter behind the closed backend's", first)
	}
	if second := <-results; second.err != nil {
		t.Fatalf("the closed backend's waiter: %v", second.err)
	}
}
