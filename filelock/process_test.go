//go:build linux

package filelock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/fence"
)

// The cross-process tests re-execute this test binary as helper processes
// (TestHelperProcess, role chosen by helperEnv). Parent and children talk
// over stdin and stdout lines; no sleeps stand in for synchronisation.

const helperEnv = "DLOCK_FILELOCK_HELPER"

// helper is a running child process.
type helper struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{} // closed when the process was reaped
	err   error         // Wait's result, valid after done
}

// lineTimeout bounds waits for a child's report, so that a broken child
// fails the test instead of hanging it. It is not a timing assertion.
const lineTimeout = 60 * time.Second

func startHelper(t *testing.T, role string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=" + role}, env...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	return h
}

// expect returns the rest of the child's next line, which must start with
// prefix.
func (h *helper) expect(prefix string) string {
	h.t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			<-h.done
			h.t.Fatalf("helper %d exited (%v) before reporting %q", h.cmd.Process.Pid, h.err, prefix)
		}
		rest, found := strings.CutPrefix(line, prefix)
		if !found {
			h.t.Fatalf("helper %d said %q, want %q...", h.cmd.Process.Pid, line, prefix)
		}
		return strings.TrimSpace(rest)
	case <-time.After(lineTimeout):
		h.t.Fatalf("helper %d did not report %q within %v", h.cmd.Process.Pid, prefix, lineTimeout)
		return ""
	}
}

func (h *helper) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
}

// wait waits for the child to exit and returns its exit error.
func (h *helper) wait() error {
	h.t.Helper()
	for range h.lines { // drain
	}
	<-h.done
	return h.err
}

// kill sends SIGKILL and reaps the child.
func (h *helper) kill() {
	h.t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		h.t.Fatal(err)
	}
	h.wait()
}

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperEnv)
	if role == "" {
		t.Skip("helper process for the cross-process tests; runs only when re-executed")
	}
	code := 0
	if err := runHelper(role); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		code = 1
	}
	os.Exit(code)
}

func runHelper(role string) error {
	ctx := context.Background()
	b, err := filelock.New(os.Getenv("DIR"))
	if err != nil {
		return err
	}
	key := os.Getenv("KEY")
	ttl, err := time.ParseDuration(os.Getenv("TTL"))
	if err != nil {
		return err
	}
	c := dlock.New(b, dlock.WithTTL(ttl))
	stdin := bufio.NewScanner(os.Stdin)
	switch role {
	case "contend":
		return contend(ctx, c, key, stdin)
	case "hold":
		l, err := c.TryAcquire(ctx, key)
		if err != nil {
			return err
		}
		fmt.Println("acquired", l.Fence())
		stdin.Scan() // until killed
		return nil
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
	return fmt.Errorf("unknown role %q", role)
}

// contend acquires key ITER times, waiting, and in each critical section
// proves it is alone (O_EXCL marker) and writes through the fenced
// resource.
func contend(ctx context.Context, c *dlock.Client, key string, stdin *bufio.Scanner) error {
	iter, err := strconv.Atoi(os.Getenv("ITER"))
	if err != nil {
		return err
	}
	res, err := fence.Open(os.Getenv("RESOURCE"))
	if err != nil {
		return err
	}
	marker := os.Getenv("MARKER")
	fmt.Println("ready")
	stdin.Scan() // "go": all start together
	for i := range iter {
		l, err := c.Acquire(ctx, key)
		if err != nil {
			return err
		}
		m, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Println("overlap", err)
			return fmt.Errorf("critical section entered twice: %w", err)
		}
		m.Close()
		if err := res.Write(ctx, l.Fence(), fmt.Appendf(nil, "pid %d round %d", os.Getpid(), i)); err != nil {
			fmt.Println("rejected", err)
			return err
		}
		if err := os.Remove(marker); err != nil {
			return err
		}
		if err := l.Release(ctx); err != nil {
			return err
		}
	}
	fmt.Println("done")
	return nil
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
	ctx := t.Context()
	dir := t.TempDir()
	work := t.TempDir()
	const procs, iter = 20, 15
	resPath := filepath.Join(work, "resource")
	env := []string{
		"DIR=" + dir, "KEY=" + uniqueKey(t), "TTL=1m", "ITER=" + strconv.Itoa(iter),
		"RESOURCE=" + resPath, "MARKER=" + filepath.Join(work, "inside"),
	}
	helpers := make([]*helper, procs)
	for i := range helpers {
		helpers[i] = startHelper(t, "contend", env...)
	}
	for _, h := range helpers {
		h.expect("ready")
	}
	for _, h := range helpers {
		h.send("go")
	}
	var wg sync.WaitGroup
	for _, h := range helpers {
		wg.Go(func() {
			select {
			case line := <-h.lines:
				if line != "done" {
					t.Errorf("helper %d: %q", h.cmd.Process.Pid, line)
				}
			case <-time.After(5 * lineTimeout):
				t.Errorf("helper %d did not finish", h.cmd.Process.Pid)
			}
		})
	}
	wg.Wait()
	for _, h := range helpers {
		if err := h.wait(); err != nil {
			t.Errorf("helper %d: %v", h.cmd.Process.Pid, err)
		}
	}
	res, err := fence.Open(resPath)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != procs*iter {
		t.Errorf("%d accepted writes, want %d", len(entries), procs*iter)
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Fence <= entries[i-1].Fence {
			t.Errorf("write %d has fence %d after %d: fences must grow with each grant", i, entries[i].Fence, entries[i-1].Fence)
		}
	}
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
	h := startHelper(t, "hold", "DIR="+dir, "KEY="+key, "TTL="+ttl.String())
	held, _ := strconv.ParseUint(h.expect("acquired"), 10, 64)
	reported := time.Now()
	h.kill()
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
	h := startHelper(t, "hold", "DIR="+dir, "KEY="+key, "TTL=1h")
	h.expect("acquired")
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	if _, err := c.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire while the holder lives = %v, want ErrNotAcquired", err)
	}
	h.kill()
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
	h := startHelper(t, "hold", "DIR="+dir, "KEY="+key, "TTL=1h")
	h.expect("acquired")
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	type result struct {
		l   *dlock.Lock
		err error
	}
	got := make(chan result, 1)
	waitCtx, cancel := context.WithTimeout(ctx, lineTimeout)
	defer cancel()
	go func() {
		l, err := c.Acquire(waitCtx, key)
		got <- result{l, err}
	}()
	h.kill()
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
	h := startHelper(t, "pause", "DIR="+dir, "KEY="+key, "TTL=300ms", "RESOURCE="+res.Path())
	old, _ := strconv.ParseUint(h.expect("acquired"), 10, 64)
	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
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
	if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	h.send("go")
	for _, want := range []struct{ step, outcome string }{
		{"backend-refresh", "not-held"},
		{"refresh", "not-held"},
		{"write", "stale-fence"},
		{"release", "not-held"},
		{"backend-release", "not-held"},
	} {
		if got := h.expect(want.step); got != want.outcome {
			t.Errorf("paused holder's %s: %s, want %s", want.step, got, want.outcome)
		}
	}
	if err := h.wait(); err != nil {
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
