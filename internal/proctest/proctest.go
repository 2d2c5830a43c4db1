// Package proctest runs the backends' cross-process tests. A test starts
// children that re-execute its own test binary in a role (see [Main] and
// [Start]); parent and child talk over stdin and stdout lines, so no sleep
// stands in for synchronisation. It also holds the scenario every backend
// runs across processes ([RunContention], [Contend]) and the role of a
// process that takes a key and holds it until it is killed ([Hold]).
package proctest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// roleEnv names the role a child was started in; the test binary's
// TestMain hands control to [Main], which runs the role instead of the
// tests when it is set.
const roleEnv = "DLOCK_PROCTEST_ROLE"

// LineTimeout bounds waits for a child's report, so that a broken child
// fails the test instead of hanging it. It is not a timing assertion.
const LineTimeout = 60 * time.Second

// Main is a test binary's TestMain: in a child it runs role (with the role
// [Start] gave and the child's stdin) and exits 0 if it returned nil, 1
// with its error on stderr otherwise; in the test process it runs the
// tests.
func Main(m *testing.M, role func(name string, stdin *bufio.Scanner) error) {
	name := os.Getenv(roleEnv)
	if name == "" {
		os.Exit(m.Run())
	}
	if err := role(name, bufio.NewScanner(os.Stdin)); err != nil {
		fmt.Fprintf(os.Stderr, "child %d (%s): %v\n", os.Getpid(), name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Child is a running child process.
type Child struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{} // closed when the process was reaped
	err   error         // Wait's result, valid after done
}

// Start re-executes the test binary in role, with env added to its
// environment. The child is killed and reaped when t ends.
func Start(t testing.TB, role string, env ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + role}, env...)...)
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
	c := &Child{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Process is the child's process, to signal.
func (c *Child) Process() *os.Process { return c.cmd.Process }

// Expect returns the rest of the child's next line, which must start with
// prefix, trimmed of spaces.
func (c *Child) Expect(prefix string) string {
	c.t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			<-c.done
			c.t.Fatalf("child %d exited (%v) before saying %q", c.Pid(), c.err, prefix)
		}
		rest, found := strings.CutPrefix(line, prefix)
		if !found {
			c.t.Fatalf("child %d said %q, want %q...", c.Pid(), line, prefix)
		}
		return strings.TrimSpace(rest)
	case <-time.After(LineTimeout):
		c.t.Fatalf("child %d did not say %q within %v", c.Pid(), prefix, LineTimeout)
		return ""
	}
}

// Send writes line to the child's stdin.
func (c *Child) Send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatal(err)
	}
}

// Wait waits for the child to exit, skipping what else it says, and
// returns its exit error.
func (c *Child) Wait() error {
	for range c.lines {
	}
	<-c.done
	return c.err
}

// Kill sends SIGKILL and reaps the child.
func (c *Child) Kill() {
	c.t.Helper()
	if err := c.cmd.Process.Kill(); err != nil {
		c.t.Fatal(err)
	}
	_ = c.Wait()
}

// HoldRole is the role of [Hold], the child [CheckKilledHolder] starts.
const HoldRole = "hold"

// Serve runs this package's roles ([ContendRole], [HoldRole], on the key
// in the KEY variable) in a child whose store is b: what a test binary's
// role function does once it has made its backend. The lease TTL is the
// TTL variable's (a duration; one minute when unset).
func Serve(ctx context.Context, b dlock.Backend, role string, stdin *bufio.Scanner) error {
	c, err := Client(b)
	if err != nil {
		return err
	}
	switch role {
	case ContendRole:
		return Contend(ctx, c, stdin)
	case HoldRole:
		return Hold(ctx, c, os.Getenv("KEY"), stdin)
	}
	return fmt.Errorf("unknown role %q", role)
}

// Client is a child's client over b, with the lease TTL of the TTL
// variable (one minute when unset).
func Client(b dlock.Backend) (*dlock.Client, error) {
	ttl := time.Minute
	if v := os.Getenv("TTL"); v != "" {
		var err error
		if ttl, err = time.ParseDuration(v); err != nil {
			return nil, fmt.Errorf("TTL: %w", err)
		}
	}
	return dlock.New(b, dlock.WithTTL(ttl)), nil
}

// Hold is a child's role: it takes key at once and says "acquired FENCE",
// then holds the lock until stdin closes or the parent kills it. It
// never releases: the test is about what the lock's holder leaves behind.
func Hold(ctx context.Context, c *dlock.Client, key string, stdin *bufio.Scanner) error {
	l, err := c.TryAcquire(ctx, key)
	if err != nil {
		return err
	}
	fmt.Println("acquired", l.Fence())
	for stdin.Scan() {
	}
	return nil
}

// CheckKilledHolder starts a child in [HoldRole] that takes key with
// lease ttl (env adds what it needs to reach the store), kills it with
// SIGKILL once it holds the key, and checks through c, on the same store,
// that the dead holder's lease stays until ttl: Inspect right after the
// kill shows the child as holder, and a waiting Acquire is granted no
// sooner than ttl after the child started, with a higher fence.
func CheckKilledHolder(t *testing.T, c *dlock.Client, key string, ttl time.Duration, env ...string) {
	t.Helper()
	started := time.Now()
	h := Start(t, HoldRole, append(env, "KEY="+key, "TTL="+ttl.String())...)
	held, err := strconv.ParseUint(h.Expect("acquired"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	h.Kill()
	rec, found, err := c.Inspect(t.Context(), key)
	if err != nil || (time.Since(started) < ttl/2 && !found) {
		t.Fatalf("Inspect right after the kill = %+v, %v, %v; want the dead holder's lease", rec, found, err)
	}
	if found && rec.Owner.PID != h.Pid() {
		t.Errorf("holder pid = %d, want the child's %d", rec.Owner.PID, h.Pid())
	}
	ctx, cancel := context.WithTimeout(t.Context(), LineTimeout)
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
