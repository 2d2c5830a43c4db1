package stress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/dlock-dev/dlock/internal/fence"
)

// Environment of the job. `dlock run` sets the DLOCK_* lock variables; the
// worker adds DLOCK_STRESS_RUN for a user COMMAND, so that it can log which
// run it is, as the seed's PHP script did.
const (
	EnvFence  = "DLOCK_FENCE"
	EnvLockID = "DLOCK_LOCK_ID"
	EnvKey    = "DLOCK_KEY"
	EnvRun    = "DLOCK_STRESS_RUN"
)

// maxErrorLen bounds the error text in a results line, keeping every line
// far below PIPE_BUF so that concurrent O_APPEND writes never interleave.
const maxErrorLen = 1024

// WorkerConfig is what one run of the default job needs.
type WorkerConfig struct {
	Run      int           // run id
	Hold     time.Duration // how long to hold the lock when Command is empty
	Resource string        // path of the fenced resource file
	Results  string        // path of the shared results file (JSON lines)
	Command  []string      // optional job to run instead of sleeping
	Getenv   func(string) string

	// Stdout and Stderr receive the output of Command.
	Stdout, Stderr io.Writer
}

// ErrNotUnderLock reports a worker started without the variables `dlock
// run` sets: it was not run under a lock.
var ErrNotUnderLock = errors.New("stress: not run under dlock run (no DLOCK_FENCE)")

// Work is one run of the default stress job. It runs under `dlock run`, so
// the lock is held from before it starts until after it returns. It records
// the wall-clock start, writes "start run=N" to the fenced resource with the
// grant's fence, holds for cfg.Hold (or runs cfg.Command), writes "finish
// run=N", records the finish and appends a [WorkerRecord] to cfg.Results.
//
// It returns the exit status the worker process should have: 0, the
// status of Command, or 1 when the job failed (the error says why; it is
// also in the results line). A stale fence, a refused write or ctx ending
// early (a signal: `dlock run` sends SIGTERM when the lock is lost) are
// failures.
func Work(ctx context.Context, cfg WorkerConfig) (int, error) {
	rec := WorkerRecord{Run: cfg.Run, PID: os.Getpid(), Start: time.Now()}
	status, err := work(ctx, cfg, &rec)
	rec.Finish = time.Now()
	if err != nil {
		rec.Error = truncate(err.Error(), maxErrorLen)
		if status == 0 {
			status = 1
		}
	}
	if werr := appendLine(cfg.Results, rec); werr != nil {
		return 1, errors.Join(err, werr)
	}
	return status, err
}

func work(ctx context.Context, cfg WorkerConfig, rec *WorkerRecord) (int, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	rec.Key, rec.LockID = getenv(EnvKey), getenv(EnvLockID)
	raw := getenv(EnvFence)
	if raw == "" {
		return 1, ErrNotUnderLock
	}
	f, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 1, fmt.Errorf("stress: bad %s %q", EnvFence, raw)
	}
	rec.Fence = f
	res, err := fence.Open(cfg.Resource)
	if err != nil {
		return 1, err
	}
	if err := res.Write(ctx, f, []byte(startEntry(cfg.Run))); err != nil {
		return 1, fmt.Errorf("stress: run %d: first write: %w", cfg.Run, err)
	}

	status, holdErr := hold(ctx, cfg)

	// The second write is attempted even when the hold was cut short: if
	// the lock was lost, this is the write a fenced resource must refuse.
	// ctx may be cancelled by then, so the write gets its own bound.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	writeErr := res.Write(wctx, f, []byte(finishEntry(cfg.Run)))
	if writeErr != nil {
		writeErr = fmt.Errorf("stress: run %d: last write: %w", cfg.Run, writeErr)
	}
	return status, errors.Join(holdErr, writeErr)
}

// hold is the critical section's body: sleep for cfg.Hold, or run
// cfg.Command and return its status.
func hold(ctx context.Context, cfg WorkerConfig) (int, error) {
	if len(cfg.Command) == 0 {
		t := time.NewTimer(cfg.Hold)
		defer t.Stop()
		select {
		case <-t.C:
			return 0, nil
		case <-ctx.Done():
			return 1, fmt.Errorf("stress: run %d: hold cut short: %w", cfg.Run, context.Cause(ctx))
		}
	}
	cmd := exec.CommandContext(ctx, cfg.Command[0], cfg.Command[1:]...)
	cmd.Env = append(os.Environ(), EnvRun+"="+strconv.Itoa(cfg.Run))
	cmd.Stdout, cmd.Stderr = cfg.Stdout, cfg.Stderr
	// On a signal the COMMAND gets SIGTERM, like `dlock run` gives its
	// child, rather than exec's default SIGKILL.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), fmt.Errorf("stress: run %d: %s killed by %v", cfg.Run, cfg.Command[0], ws.Signal())
		}
		return ee.ExitCode(), fmt.Errorf("stress: run %d: %s exited %d", cfg.Run, cfg.Command[0], ee.ExitCode())
	}
	return 127, fmt.Errorf("stress: run %d: %w", cfg.Run, err)
}

// startEntry and finishEntry are the data the worker writes to the fenced
// resource; [Check] reads them back.
func startEntry(run int) string  { return "start run=" + strconv.Itoa(run) }
func finishEntry(run int) string { return "finish run=" + strconv.Itoa(run) }

// appendLine appends v as one JSON line to path with a single O_APPEND
// write, which the kernel does not interleave with other processes' writes.
func appendLine(path string, v any) error {
	line, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("stress: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("stress: results: %w", err)
	}
	_, err = f.Write(append(line, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("stress: results: %w", err)
	}
	return nil
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
