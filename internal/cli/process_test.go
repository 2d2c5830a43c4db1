//go:build unix

package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Real-process tests: the test binary runs as dlock (see TestMain), so that
// signals, exit statuses and concurrent processes are the real thing.

// runArgs is `--backend URL run FLAGS... KEY -- ARGV...`.
func (s *store) runArgs(key string, flags []string, argv []string) []string {
	args := append([]string{"--backend", s.url, "run"}, flags...)
	args = append(args, key, "--")
	return append(args, argv...)
}

func TestProcessConcurrentRuns(t *testing.T) {
	s := newStore(t)
	first := startDlock(t, nil, s.runArgs("job", []string{"--ttl", "1h", "--label", "first"}, childArgv(t, "hold"))...)
	lockID := first.readReady()

	second := startDlock(t, nil, s.runArgs("job", []string{"--ttl", "1h"}, childArgv(t, "hold"))...)
	code, out := second.wait()
	if code != ExitConflict {
		t.Fatalf("second run: exit %d, want %d; stderr %q", code, ExitConflict, second.stderr.String())
	}
	if out != "" {
		t.Errorf("second run's command ran: stdout %q", out)
	}
	stderr := second.stderr.String()
	oneLineContaining(t, stderr, `"job" is locked by lock `+lockID)
	for _, want := range []string{fmt.Sprintf("pid %d", first.cmd.Pid), "host ", `"first"`, "since ", "until "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("conflict line does not name the holder's %q: %q", want, stderr)
		}
	}

	first.stdin.Close() // the child exits 0
	if code, _ := first.wait(); code != 0 {
		t.Fatalf("first run: exit %d; stderr %q", code, first.stderr.String())
	}
	// Released at once, not at the end of its 1h TTL.
	s.assertFree("job")
}

// TestProcessMinHold: with --min-hold, a run whose job ended keeps the key
// taken after its dlock process has exited, so that the next run within
// the period is refused, although the file backend frees a dead holder's
// key at once; without it (the control), the next run runs.
func TestProcessMinHold(t *testing.T) {
	s := newStore(t)
	first := startDlock(t, nil, s.runArgs("hourly", []string{"--min-hold", "1h"}, []string{"/bin/sh", "-c", "echo first"})...)
	if code, out := first.wait(); code != 0 || out != "first\n" {
		t.Fatalf("first run: exit %d, stdout %q; stderr %q", code, out, first.stderr.String())
	}
	rec := s.inspect("hourly")
	if rec == nil {
		t.Fatal("the key is free after a run with --min-hold 1h")
	}
	if left := time.Until(rec.ExpiresAt); left < 59*time.Minute || left > time.Hour+time.Minute {
		t.Errorf("kept lease expires in %v, want about 1h", left)
	}
	if rec.Owner.PID != 0 {
		t.Errorf("kept lease still names pid %d: the dead-holder check would free it", rec.Owner.PID)
	}

	second := startDlock(t, nil, s.runArgs("hourly", nil, []string{"/bin/sh", "-c", "echo second"})...)
	if code, out := second.wait(); code != ExitConflict || out != "" {
		t.Fatalf("second run within the hour: exit %d, stdout %q, want %d and no output; stderr %q",
			code, out, ExitConflict, second.stderr.String())
	}

	control := startDlock(t, nil, s.runArgs("daily", nil, []string{"/bin/sh", "-c", "echo once"})...)
	if code, _ := control.wait(); code != 0 {
		t.Fatalf("control run: exit %d; stderr %q", code, control.stderr.String())
	}
	s.assertFree("daily")
}

func TestProcessExitStatus(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"exit 200", 200},
		{"kill -TERM $$", 128 + int(syscall.SIGTERM)},
		{"kill -KILL $$", 128 + int(syscall.SIGKILL)},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			p := startDlock(t, nil, s.runArgs("status", []string{"--ttl", "1h"}, []string{"/bin/sh", "-c", tt.script})...)
			if code, _ := p.wait(); code != tt.want {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.want, p.stderr.String())
			}
			if got := p.stderr.String(); got != "" {
				t.Errorf("dlock added to stderr: %q", got)
			}
			s.assertFree("status")
		})
	}
}

func TestProcessSignalsReachChild(t *testing.T) {
	s := newStore(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(signalName(sig), func(t *testing.T) {
			p := startDlock(t, nil, s.runArgs("sig", []string{"--ttl", "1h"}, childArgv(t, "signal", "42"))...)
			p.readReady()
			p.signal(sig)
			if got, want := p.readLine(), "got "+signalName(sig); got != want {
				t.Errorf("child said %q, want %q", got, want)
			}
			// dlock exits with the child's status, not because of the signal.
			if code, _ := p.wait(); code != 42 {
				t.Errorf("exit %d, want the child's 42; stderr %q", code, p.stderr.String())
			}
			s.assertFree("sig")
		})
	}
}

func TestProcessLockBrokenStopsChild(t *testing.T) {
	s := newStore(t)
	t.Run("child stops on SIGTERM", func(t *testing.T) {
		p := startDlock(t, nil, s.runArgs("broken", []string{"--ttl", "2s", "--grace", "1m"}, childArgv(t, "signal", "0"))...)
		p.readReady()
		s.mustDlock(0, "break", "--force", "broken")
		if got := p.readLine(); got != "got SIGTERM" {
			t.Errorf("child said %q, want got SIGTERM", got)
		}
		// Even though the child exited 0, the run failed: it lost the lock.
		if code, _ := p.wait(); code != ExitLost {
			t.Errorf("exit %d, want %d", code, ExitLost)
		}
		oneLineContaining(t, p.stderr.String(), `lost the lock on "broken"`)
	})
	t.Run("child ignores SIGTERM", func(t *testing.T) {
		p := startDlock(t, nil, s.runArgs("broken2", []string{"--ttl", "2s", "--grace", "100ms"}, childArgv(t, "ignore-term"))...)
		p.readReady()
		s.mustDlock(0, "break", "--force", "broken2")
		if code, _ := p.wait(); code != ExitLost {
			t.Errorf("exit %d, want %d", code, ExitLost)
		}
		if !strings.Contains(p.stderr.String(), "sending SIGKILL") {
			t.Errorf("stderr does not say SIGKILL was sent: %q", p.stderr.String())
		}
	})
}

func TestProcessWaitQueues(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	first := startDlock(t, nil, s.runArgs("queue", []string{"--ttl", "1h"}, childArgv(t, "exclusive", dir, "first"))...)
	first.readReady()

	// Two more runs wait their turn. Each child checks that no other child
	// is inside (exit 99 otherwise), so an overlap fails the test whatever
	// the timing.
	var waiting []*proc
	for _, name := range []string{"second", "third"} {
		p := startDlock(t, nil, s.runArgs("queue", []string{"--ttl", "1h", "--wait", "forever"}, childArgv(t, "exclusive", dir, name))...)
		p.stdin.Close() // each runs as soon as it has the lock, then exits
		waiting = append(waiting, p)
	}
	first.stdin.Close()
	for _, p := range append(waiting, first) {
		if code, _ := p.wait(); code != 0 {
			t.Errorf("run exited %d; stderr %q", code, p.stderr.String())
		}
	}
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(order))
	if len(lines) != 3 || lines[0] != "first" {
		t.Errorf("order of runs %q, want first then the other two", lines)
	}
	s.assertFree("queue")
}

func TestProcessInterruptedWhileWaiting(t *testing.T) {
	s := newStore(t)
	tok, _ := s.mustDlock(0, "acquire", "--ttl", "1h", "busy")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(signalName(sig), func(t *testing.T) {
			hookR, hookW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer hookR.Close()
			p := startDlock(t, hookW, s.runArgs("busy", []string{"--wait", "forever"}, []string{"/bin/sh", "-c", "echo ran"})...)
			hookW.Close()
			buf := make([]byte, len("waiting\n"))
			if _, err := hookR.Read(buf); err != nil || string(buf) != "waiting\n" {
				t.Fatalf("dlock did not start waiting: %q, %v; stderr %q", buf, err, p.stderr.String())
			}
			p.signal(sig)
			code, out := p.wait()
			if code != 128+int(sig) {
				t.Errorf("exit %d, want %d", code, 128+int(sig))
			}
			if out != "" {
				t.Errorf("the command ran: %q", out)
			}
			oneLineContaining(t, p.stderr.String(), "interrupted by "+signalName(sig)+` while waiting for "busy"`)
		})
	}
	// The holder still holds it: the interrupted waiters took nothing.
	s.mustDlock(0, "release", "busy", strings.TrimSpace(tok))
	s.assertNoLocks()
}

func TestProcessChildDiesWithDlock(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parent-death signal is Linux only")
	}
	s := newStore(t)
	p := startDlock(t, nil, s.runArgs("orphan", []string{"--ttl", "1h"}, childArgv(t, "hold"))...)
	p.readReady()
	if err := p.cmd.Kill(); err != nil { // SIGKILL: dlock cannot react
		t.Fatal(err)
	}
	// stdout reaches EOF only when every process holding it is gone: dlock
	// and its child. A surviving child would keep it open and wait() would
	// fail after its bound.
	if code, _ := p.wait(); code != 128+int(syscall.SIGKILL) {
		t.Errorf("dlock exit %d, want %d", code, 128+int(syscall.SIGKILL))
	}
}
