package stress

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
)

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

func TestLaunchRecordsEveryProcess(t *testing.T) {
	sh := mustLookPath(t, "sh")
	const n = 30
	var exits atomic.Int32
	l, err := Launch(t.Context(), LaunchConfig{
		N: n,
		Argv: func(i int) []string {
			// Process i prints its number and exits with i%4.
			return []string{sh, "-c", `echo "out $1"; echo "err $1" >&2; exit $(($1 % 4))`, "sh", strconv.Itoa(i)}
		},
		OutputDir: t.TempDir(),
		OnExit:    func(Proc) { exits.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if exits.Load() != n {
		t.Errorf("OnExit called %d times, want %d", exits.Load(), n)
	}
	for i, p := range l.Procs {
		if p.Index != i || p.PID == 0 || p.StartErr != nil {
			t.Errorf("proc %d: %+v", i, p)
		}
		if p.ExitCode != i%4 {
			t.Errorf("proc %d: exit %d, want %d", i, p.ExitCode, i%4)
		}
		want := "out " + strconv.Itoa(i) + "\nerr " + strconv.Itoa(i) + "\n"
		if p.Output != want {
			t.Errorf("proc %d: output %q, want %q", i, p.Output, want)
		}
		if p.Launched.Before(l.Began) || p.Exited.Before(p.Launched) || l.Ended.Before(p.Exited) {
			t.Errorf("proc %d: times out of order: began %v launched %v exited %v ended %v",
				i, l.Began, p.Launched, p.Exited, l.Ended)
		}
	}
	if l.Spread() < 0 || l.Spread() > l.Wall() {
		t.Errorf("spread %v outside 0..wall %v", l.Spread(), l.Wall())
	}
}

func TestLaunchKeepsTheTailOfLongOutput(t *testing.T) {
	sh := mustLookPath(t, "sh")
	l, err := Launch(t.Context(), LaunchConfig{
		N: 1,
		Argv: func(int) []string {
			return []string{sh, "-c", `i=0; while [ $i -lt 1000 ]; do echo line $i; i=$((i+1)); done`}
		},
		OutputDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := l.Procs[0].Output
	if len(out) != outputTail || out[len(out)-9:] != "line 999\n" {
		t.Errorf("output is %d bytes ending %q; want the last %d bytes", len(out), out[max(len(out)-9, 0):], outputTail)
	}
}

func TestLaunchCommandNotFound(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-command")
	l, err := Launch(t.Context(), LaunchConfig{N: 2, Argv: func(int) []string { return []string{missing} }})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Procs {
		if p.StartErr == nil || p.ExitCode != -1 || p.PID != 0 || !p.Launched.IsZero() {
			t.Errorf("proc %+v: want a start error", p)
		}
	}
}

func TestLaunchStopsOnCancel(t *testing.T) {
	sh := mustLookPath(t, "sh")
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		// The child opens the FIFO once it runs; then it is stopped.
		if f, err := os.Open(fifo); err == nil {
			_, _ = io.ReadAll(f)
			f.Close()
		}
		cancel()
	}()
	l, err := Launch(ctx, LaunchConfig{N: 1, Argv: func(int) []string {
		return []string{sh, "-c", `echo running > "$1"; exec sleep 60`, "sh", fifo}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Launch error %v, want context.Canceled", err)
	}
	if p := l.Procs[0]; p.ExitCode != 128+int(syscall.SIGTERM) {
		t.Errorf("exit %d, want 143 (SIGTERM)", p.ExitCode)
	}
	// Once cancelled, nothing more is started.
	l, err = Launch(ctx, LaunchConfig{N: 3, Argv: func(int) []string { return []string{sh, "-c", "exit 0"} }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Launch error %v, want context.Canceled", err)
	}
	for _, p := range l.Procs {
		if p.StartErr == nil {
			t.Errorf("proc %d started after cancellation", p.Index)
		}
	}
}

func TestLaunchRejectsNoProcesses(t *testing.T) {
	if _, err := Launch(t.Context(), LaunchConfig{N: 0, Argv: func(int) []string { return nil }}); err == nil {
		t.Error("Launch with N 0 succeeded")
	}
}
