package memcachelock_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/fence"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/memcachelock"
)

// The cross-process tests re-execute this test binary as helper processes
// (TestHelperProcess, role chosen by helperEnv) that share one memcached.
// Parent and children talk over stdin and stdout lines; no sleeps stand in
// for synchronisation.

const helperEnv = "DLOCK_MEMCACHELOCK_HELPER"

// lineTimeout bounds waits for a child's report so that a broken child
// fails the test instead of hanging it. It is not a timing assertion.
const lineTimeout = 60 * time.Second

type helper struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   error // Wait's result, valid after done
}

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

func (h *helper) wait() error {
	for range h.lines { // drain
	}
	<-h.done
	return h.err
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
	// A generous network timeout: eight helpers, memcached and the race
	// detector share two cores.
	b, err := memcachelock.New([]string{os.Getenv("ADDR")}, memcachelock.WithPrefix(os.Getenv("PREFIX")),
		memcachelock.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	ttl, err := time.ParseDuration(os.Getenv("TTL"))
	if err != nil {
		return err
	}
	c := dlock.New(b, dlock.WithTTL(ttl))
	key := os.Getenv("KEY")
	stdin := bufio.NewScanner(os.Stdin)
	switch role {
	case "hold":
		l, err := c.TryAcquire(ctx, key)
		if err != nil {
			return err
		}
		fmt.Println("acquired", l.Fence())
		stdin.Scan() // until killed
		return nil
	case "contend":
		return contend(ctx, c, key, stdin)
	}
	return fmt.Errorf("unknown role %q", role)
}

// contend acquires key ITER times, waiting, and in each critical section
// proves it is alone (O_EXCL marker file) and writes through the fenced
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
			return fmt.Errorf("critical section entered twice: %w", err)
		}
		m.Close()
		if err := res.Write(ctx, l.Fence(), fmt.Appendf(nil, "pid %d round %d", os.Getpid(), i)); err != nil {
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

// Processes contending for one key through memcached never overlap, and
// every grant's fence is above the one before.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	srv := testserver.Memcached(t)
	work := t.TempDir()
	const procs, iter = 8, 15
	resPath := filepath.Join(work, "resource")
	env := []string{
		"ADDR=" + srv.Addr, "PREFIX=" + uniquePrefix(t), "KEY=" + uniqueKey(t), "TTL=1m",
		"ITER=" + strconv.Itoa(iter), "RESOURCE=" + resPath, "MARKER=" + filepath.Join(work, "inside"),
	}
	helpers := make([]*helper, procs)
	for i := range helpers {
		helpers[i] = startHelper(t, "contend", env...)
	}
	for _, h := range helpers {
		h.expect("ready")
	}
	for _, h := range helpers {
		if _, err := io.WriteString(h.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for _, h := range helpers {
		wg.Go(func() {
			if err := h.wait(); err != nil {
				t.Errorf("helper %d: %v", h.cmd.Process.Pid, err)
			}
		})
	}
	wg.Wait()
	res, err := fence.Open(resPath)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != procs*iter {
		t.Errorf("%d accepted writes, want %d", len(entries), procs*iter)
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Fence <= entries[i-1].Fence {
			t.Errorf("write %d has fence %d after %d", i, entries[i].Fence, entries[i-1].Fence)
		}
	}
}

// A holder killed with SIGKILL leaves its lease in memcached: another
// process gets the key after the TTL, with a higher fence, and not before.
func TestKilledHolderFreedAtTTL(t *testing.T) {
	srv := testserver.Memcached(t)
	prefix, key := uniquePrefix(t), uniqueKey(t)
	const ttl = time.Second
	started := time.Now()
	h := startHelper(t, "hold", "ADDR="+srv.Addr, "PREFIX="+prefix, "KEY="+key, "TTL="+ttl.String())
	held, err := strconv.ParseUint(h.expect("acquired"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.wait()
	b, err := memcachelock.New([]string{srv.Addr}, memcachelock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b)
	rec, found, err := c.Inspect(t.Context(), key)
	if err != nil || (time.Since(started) < ttl/2 && !found) {
		t.Fatalf("Inspect right after the kill = %+v, %v, %v; want the dead holder's lease", rec, found, err)
	}
	if found && rec.Owner.PID != h.cmd.Process.Pid {
		t.Errorf("holder pid = %d, want the child's %d", rec.Owner.PID, h.cmd.Process.Pid)
	}
	ctx, cancel := context.WithTimeout(t.Context(), lineTimeout)
	defer cancel()
	l, err := c.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if since := time.Since(started); since < ttl {
		t.Errorf("granted %v after the holder started, before its TTL of %v", since, ttl)
	}
	if l.Fence() <= held {
		t.Errorf("fence %d after the killed holder's %d", l.Fence(), held)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Error(err)
	}
}
