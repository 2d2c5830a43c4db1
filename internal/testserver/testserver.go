// Package testserver starts real store servers (redis-server, memcached,
// ...) on free loopback ports for integration tests, and stops them when the
// test ends. A test whose server binary is missing is skipped locally but
// fails when CI=true, so CI cannot pass by skipping.
package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the path of the server program name, or skips t (fails t
// when the CI environment variable is "true") if it is not installed.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	notInstalled(t, name)
	return ""
}

// notInstalled skips t, or fails it when CI=true, for a missing server.
func notInstalled(t testing.TB, name string) {
	t.Helper()
	msg := fmt.Sprintf("%s not installed (run `make deps` or ./scripts/install-test-deps)", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// caller starts its server on it at once; [Start] retries on a lost race.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatalf("testserver: %v", err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Process is a server started by [Start].
type Process struct {
	Addr string // 127.0.0.1:port
	Port int

	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	output strings.Builder
}

// Pid is the server's process id (for PostgreSQL, the postmaster's).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the server (SIGSTOP to make it hang, SIGCONT to
// let it go on).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Start runs the program with args(port) on a free port and waits until it
// accepts TCP connections on it, retrying a few times with a new port if the
// server exits (the port may have been taken in between). The server is
// killed when t ends.
func Start(t testing.TB, binary string, args func(port int) []string) *Process {
	t.Helper()
	var lastErr error
	for try := 0; try < 5; try++ {
		p, err := start(binary, args, FreePort(t))
		if err == nil {
			t.Cleanup(p.Stop)
			return p
		}
		lastErr = err
	}
	t.Fatalf("testserver: start %s: %v", binary, lastErr)
	return nil
}

func start(binary string, args func(port int) []string, port int) (*Process, error) {
	p, err := launch(binary, args, port)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%w; output:\n%s", err, p.Output())
	}
	return p, nil
}

// launch runs the program with args(port) without waiting for it to
// accept connections: for servers that accept them only once their peers
// are up too.
func launch(binary string, args func(port int) []string, port int) (*Process, error) {
	return launchAs(binary, args, port, nil)
}

// launchAs is [launch] with the server run as cred's user (nil: ours), for
// servers that refuse to run as root.
func launchAs(binary string, args func(port int) []string, port int, cred *syscall.Credential) (*Process, error) {
	p := &Process{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args(port)...)
	p.cmd.SysProcAttr = procAttr()
	p.cmd.SysProcAttr.Credential = cred
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go p.collect(out)
	return p, nil
}

func (p *Process) collect(r io.Reader) {
	defer close(p.done)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.output.WriteString(sc.Text() + "\n")
		p.mu.Unlock()
	}
	_ = p.cmd.Wait()
}

// waitReady polls the port until it accepts connections: a server has no
// other way to tell us it is listening. Exiting early is reported at once.
func (p *Process) waitReady(ctx context.Context) error {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", p.Addr)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-p.done:
			return errors.New("server exited before accepting connections")
		case <-ctx.Done():
			return fmt.Errorf("server did not accept connections on %s: %w", p.Addr, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Output returns what the server printed so far, for failure messages.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// Stop kills the server and waits for it to exit. Safe to call twice.
func (p *Process) Stop() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}
