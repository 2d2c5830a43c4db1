package redislock_test

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

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/fence"
	"github.com/dlock-dev/dlock/redislock"
)

// The cross-process test re-executes this test binary as contending
// processes (TestHelperProcess). Each has its own go-redis client and
// Backend; parent and children talk over stdin/stdout lines.

const helperEnv = "DLOCK_REDISLOCK_HELPER"

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for the cross-process test; runs only when re-executed")
	}
	code := 0
	if err := contend(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		code = 1
	}
	os.Exit(code)
}

// contend acquires KEY ITER times, waiting, and in each critical section
// proves it is alone (O_EXCL marker file) and writes through the fenced
// resource, which refuses a fence lower than one it has seen.
func contend() error {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("ADDR")})
	defer rdb.Close()
	b, err := redislock.New(rdb, redislock.WithFIFO(os.Getenv("FIFO") == "1"))
	if err != nil {
		return err
	}
	defer b.Close()
	c := dlock.New(b, dlock.WithTTL(time.Minute))
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
	bufio.NewScanner(os.Stdin).Scan() // "go": all start together
	for i := range iter {
		l, err := c.Acquire(ctx, os.Getenv("KEY"))
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

// TestProcessesContending runs 8 processes that take one key 20 times each
// through a real redis-server and write through a fenced resource: no two
// are ever inside together, no write is refused, and the fences in the log
// grow with every grant.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	srv := startRedis(t)
	for _, fifo := range []string{"0", "1"} {
		t.Run("fifo="+fifo, func(t *testing.T) {
			const procs, iter = 8, 20
			work := t.TempDir()
			resPath := filepath.Join(work, "resource")
			env := []string{
				helperEnv + "=1", "ADDR=" + srv.Addr, "KEY=" + uniqueKey(t, "shared"), "FIFO=" + fifo,
				"ITER=" + strconv.Itoa(iter), "RESOURCE=" + resPath, "MARKER=" + filepath.Join(work, "inside"),
			}
			type child struct {
				cmd   *exec.Cmd
				stdin io.WriteCloser
				lines chan string
				done  chan error
			}
			children := make([]*child, procs)
			for i := range children {
				cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
				cmd.Env = append(os.Environ(), env...)
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
				ch := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 4), done: make(chan error, 1)}
				go func() {
					sc := bufio.NewScanner(stdout)
					for sc.Scan() {
						ch.lines <- sc.Text()
					}
					close(ch.lines)
					ch.done <- cmd.Wait()
				}()
				t.Cleanup(func() { _ = cmd.Process.Kill() })
				children[i] = ch
			}
			expect := func(c *child, want string) {
				t.Helper()
				select {
				case line, ok := <-c.lines:
					if !ok || line != want {
						t.Fatalf("helper %d said %q (open %v), want %q", c.cmd.Process.Pid, line, ok, want)
					}
				case <-time.After(patience * 3):
					t.Fatalf("helper %d did not say %q", c.cmd.Process.Pid, want)
				}
			}
			for _, c := range children {
				expect(c, "ready")
			}
			for _, c := range children {
				if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
					t.Fatal(err)
				}
			}
			var wg sync.WaitGroup
			for _, c := range children {
				wg.Go(func() {
					expect(c, "done")
					if err := <-c.done; err != nil {
						t.Errorf("helper %d: %v", c.cmd.Process.Pid, err)
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
		})
	}
}
