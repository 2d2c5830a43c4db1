package cli

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the dlock command and as the child that
// `dlock run` supervises, selected by its first argument, so real-process
// tests need no separate build.
const (
	asDlock = "__dlock" // testbin __dlock ARGS...: behave as dlock
	asChild = "__child" // testbin __child MODE ...: a scripted child
	hookFD  = "DLOCK_CLI_TEST_HOOK_FD"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case asDlock:
			if fd := os.Getenv(hookFD); fd != "" {
				installWaitHook(fd)
			}
			os.Exit(Main(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
		case asChild:
			os.Exit(testChild(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

// testChild is the child run under `dlock run` in real-process tests. Every
// mode first prints "ready LOCK_ID FENCE" on stdout, so the test knows the
// child runs under the lock, then:
//
//	hold              waits for EOF on stdin, exits 0
//	signal CODE       waits for SIGINT/SIGTERM/SIGHUP, prints "got SIG...", exits CODE
//	ignore-term       ignores SIGTERM and waits for stdin EOF (SIGKILL stops it)
//	exclusive DIR N   creates DIR/inside exclusively (exit 99 if another child
//	                  is inside), appends N to DIR/order, waits for stdin EOF,
//	                  removes DIR/inside
func testChild(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "child: no mode")
		return 2
	}
	sigs := make(chan os.Signal, 1)
	switch args[0] {
	case "signal":
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	}
	var inside string
	if args[0] == "exclusive" && len(args) == 3 {
		inside = filepath.Join(args[1], "inside")
		f, err := os.OpenFile(inside, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: overlap:", err)
			return 99
		}
		f.Close()
		order, err := os.OpenFile(filepath.Join(args[1], "order"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return 98
		}
		fmt.Fprintln(order, args[2])
		order.Close()
	}
	fmt.Printf("ready %s %s\n", os.Getenv("DLOCK_LOCK_ID"), os.Getenv("DLOCK_FENCE"))
	switch args[0] {
	case "signal":
		sig := <-sigs
		fmt.Printf("got %s\n", signalName(sig))
		var code int
		fmt.Sscan(args[1], &code)
		return code
	case "hold", "ignore-term", "exclusive":
		_, _ = io.Copy(io.Discard, os.Stdin)
		if inside != "" {
			os.Remove(inside)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "child: unknown mode", args[0])
	return 2
}

// testBinary is the path of this test binary.
func testBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// childArgv is the command line of a scripted child.
func childArgv(t *testing.T, mode ...string) []string {
	return append([]string{testBinary(t), asChild}, mode...)
}

// proc is a dlock process started by a test.
type proc struct {
	t      *testing.T
	cmd    *os.Process
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *syncBuffer
	done   chan struct{}
	state  *os.ProcessState
	outBuf bytes.Buffer // stdout lines read so far
}

// startDlock starts the test binary as dlock with args. Its stdin and
// stdout are pipes held by the test; extra, if given, becomes fd 3.
func startDlock(t *testing.T, extra *os.File, args ...string) *proc {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, stdin: inW, stdout: bufio.NewReader(outR), stderr: new(syncBuffer), done: make(chan struct{})}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The race detector sleeps a second at exit by default; not here.
	attr := &os.ProcAttr{Files: []*os.File{inR, outW, errW}, Env: append(os.Environ(), "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")}
	if extra != nil {
		attr.Files = append(attr.Files, extra)
		attr.Env = append(attr.Env, hookFD+"=3")
	}
	p.cmd, err = os.StartProcess(testBinary(t), append([]string{testBinary(t), asDlock}, args...), attr)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		_, _ = io.Copy(p.stderr, errR)
		errR.Close()
	}()
	go func() {
		defer close(p.done)
		p.state, _ = p.cmd.Wait()
		<-errDone // stderr is complete once the child and its children closed it
	}()
	t.Cleanup(func() {
		inW.Close()
		select {
		case <-p.done:
		default:
			_ = p.cmd.Kill()
			<-p.done
		}
		outR.Close()
	})
	return p
}

// readLine returns the next stdout line, failing the test at EOF or after
// a generous bound.
func (p *proc) readLine() string {
	p.t.Helper()
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := p.stdout.ReadString('\n')
		ch <- result{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			p.t.Fatalf("reading dlock's stdout: %v (got %q; stderr %q)", r.err, r.line, p.stderr.String())
		}
		p.outBuf.WriteString(r.line)
		return strings.TrimSuffix(r.line, "\n")
	case <-time.After(30 * time.Second):
		p.t.Fatalf("no line on dlock's stdout within 30s")
		return ""
	}
}

// readReady waits for the child's "ready LOCK_ID FENCE" line and returns
// the lock id.
func (p *proc) readReady() string {
	p.t.Helper()
	f := strings.Fields(p.readLine())
	if len(f) != 3 || f[0] != "ready" {
		p.t.Fatalf("want the child's ready line, got %q", strings.Join(f, " "))
	}
	return f[1]
}

// wait waits for dlock to exit and returns its exit status (128+N if a
// signal killed it) and the rest of its stdout.
func (p *proc) wait() (int, string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.cmd.Kill()
		p.t.Fatalf("dlock did not exit within 60s; stderr %q", p.stderr.String())
	}
	rest, _ := io.ReadAll(p.stdout)
	p.outBuf.Write(rest)
	ws := p.state.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), p.outBuf.String()
	}
	return ws.ExitStatus(), p.outBuf.String()
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Signal(sig); err != nil {
		p.t.Fatalf("signal dlock: %v", err)
	}
}
