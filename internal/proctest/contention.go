package proctest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/fence"
)

// ContendRole is the role [RunContention] starts its children in; the
// test binary's role function answers it with [Contend].
const ContendRole = "contend"

// RunContention starts procs children in [ContendRole], with env (what
// they need to reach the store, and KEY) added to their environment, lets
// them go at once and checks what they did: every child took the key iter
// times and finished; no two were ever inside together; the fenced
// resource accepted all procs*iter writes, from procs processes, with a
// fence above the one before each time.
func RunContention(t *testing.T, procs, iter int, env ...string) {
	t.Helper()
	work := t.TempDir()
	resPath := filepath.Join(work, "resource")
	env = append(env, "ITER="+strconv.Itoa(iter), "RESOURCE="+resPath, "MARKER="+filepath.Join(work, "inside"))
	children := make([]*Child, procs)
	for i := range children {
		children[i] = Start(t, ContendRole, env...)
	}
	for _, c := range children {
		c.Expect("ready")
	}
	for _, c := range children {
		c.Send("go")
	}
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Go(func() {
			// Not Expect: FailNow must not run on this goroutine.
			select {
			case line, ok := <-c.lines:
				if !ok || line != "done" {
					t.Errorf("child %d said %q (open %v), want \"done\"", c.Pid(), line, ok)
				}
			case <-time.After(5 * LineTimeout):
				t.Errorf("child %d did not finish within %v", c.Pid(), 5*LineTimeout)
				_ = c.cmd.Process.Kill()
			}
			if err := c.Wait(); err != nil {
				t.Errorf("child %d: %v", c.Pid(), err)
			}
		})
	}
	wg.Wait()
	checkLog(t, resPath, procs, iter)
}

// checkLog checks the fenced resource's log after a contention run.
func checkLog(t *testing.T, resPath string, procs, iter int) {
	t.Helper()
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
	pids := make(map[string]bool)
	for i, e := range entries {
		if i > 0 && e.Fence <= entries[i-1].Fence {
			t.Errorf("write %d has fence %d after %d: fences must grow with each grant", i, e.Fence, entries[i-1].Fence)
		}
		pid, _, _ := strings.Cut(strings.TrimPrefix(string(e.Data), "pid "), " ")
		pids[pid] = true
	}
	if len(pids) != procs {
		t.Errorf("writes came from %d processes, want %d", len(pids), procs)
	}
}

// Contend is the child's side of [RunContention]: it says "ready", waits
// for "go", then takes $KEY $ITER times through c, waiting, and in each
// critical section proves it is alone (it creates $MARKER with O_EXCL) and
// writes through the fenced resource at $RESOURCE, which refuses a fence
// lower than one it has seen. It says "done" at the end.
func Contend(ctx context.Context, c *dlock.Client, stdin *bufio.Scanner) error {
	iter, err := strconv.Atoi(os.Getenv("ITER"))
	if err != nil {
		return err
	}
	res, err := fence.Open(os.Getenv("RESOURCE"))
	if err != nil {
		return err
	}
	key, marker := os.Getenv("KEY"), os.Getenv("MARKER")
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
