package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

// Environment variables set for the child of `dlock run`.
const (
	envKey    = "DLOCK_KEY"
	envFence  = "DLOCK_FENCE"
	envLockID = "DLOCK_LOCK_ID"
)

// maxLabel bounds the command line stored as the lock's label.
const maxLabel = 128

type runFlags struct {
	acquireFlags
	maxHold     time.Duration
	minHold     time.Duration
	grace       time.Duration
	exportToken bool
}

func newRunCmd(e *env) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] KEY -- COMMAND [ARGS...]",
		Short: "Run a command while holding a lock",
		Long: `Run takes KEY, runs COMMAND with ARGS (directly, no shell) while holding it, and
releases it the moment COMMAND exits. The lock is refreshed every third of
--ttl while COMMAND runs, so a long job keeps it and a killed dlock frees it
within --ttl. Put COMMAND after "--" so its flags are not read as dlock's.

If KEY is held by someone else, run waits up to --wait, then exits 75 (or
--conflict-exit-code) with one line on stderr naming the holder. When it
starts to wait and stderr is a terminal, it says whom it waits for (not
under cron, which would mail the line).

If the lock is lost while COMMAND runs (a refresh finds it gone or broken,
the store stays unreachable past the lease, or --max-hold passes), COMMAND
gets SIGTERM, then SIGKILL after --grace, and run exits 79.

SIGINT, SIGTERM and SIGHUP sent to dlock are passed on to COMMAND; dlock
exits when COMMAND does, with COMMAND's status (128+N if a signal N killed
it). While still waiting for the lock they stop dlock instead (exit 128+N).
On Linux COMMAND is killed if dlock itself is killed with SIGKILL.

With --min-hold D, KEY stays taken until D after the grant even if COMMAND
ends sooner, whatever its status: a job that every server starts from cron
then runs at most once per period, even when it takes seconds and the
servers' clocks or crons disagree by more (use a little less than the
period, 50m for an hourly job). The lease then no longer depends on this
dlock process; dlock break frees it early.

COMMAND's environment gets DLOCK_KEY, DLOCK_FENCE (the grant's fencing
number, to pass to the resource it writes) and DLOCK_LOCK_ID; with
--export-token also DLOCK_TOKEN; with --backend also DLOCK_BACKEND.
COMMAND not found exits 127, not executable 126, as in shells.`,
		Example: `  dlock run nightly-import -- /usr/local/bin/import --full
  dlock run --wait 10m --ttl 1m deploy -- make deploy
  dlock run -q -E 0 report -- ./report.sh     # skip silently if already running
  dlock run -q -E 0 --min-hold 50m import -- ./import.sh   # hourly on every server, runs once an hour`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.run(cmd, args, &f)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.Var(&durationValue{d: &f.maxHold}, "max-hold", "give the lock up and stop COMMAND after this long (default: no bound)")
	fs.Var(&durationValue{d: &f.minHold}, "min-hold", "keep KEY taken until this long after the grant, even if COMMAND ends sooner (default: release when COMMAND exits)")
	f.grace = 5 * time.Second
	fs.Var(&durationValue{d: &f.grace}, "grace", "time between SIGTERM and SIGKILL when COMMAND must stop")
	fs.BoolVar(&f.exportToken, "export-token", false, "also give COMMAND the lock's secret token in DLOCK_TOKEN")
	fs.StringVar(&f.label, "label", "", "description of the holder shown by status and list (default: the command line)")
	return cmd
}

// checkMinHold rejects a --min-hold no lease can last.
func checkMinHold(cmd *cobra.Command, d time.Duration) error {
	if d > dlock.MaxTTL {
		return usageErr(cmd, "bad --min-hold: %v is above %v", d, dlock.MaxTTL)
	}
	return nil
}

// splitRunArgs separates KEY from COMMAND [ARGS...].
func splitRunArgs(cmd *cobra.Command, args []string) (string, []string, error) {
	dash := cmd.ArgsLenAtDash()
	switch {
	case len(args) == 0 || dash == 0:
		return "", nil, usageErr(cmd, "missing KEY (usage: dlock run [flags] KEY -- COMMAND [ARGS...])")
	case dash > 1:
		return "", nil, usageErr(cmd, "expected one KEY before --, got %d arguments", dash)
	case len(args) == 1:
		return "", nil, usageErr(cmd, "missing COMMAND (usage: dlock run [flags] KEY -- COMMAND [ARGS...])")
	case args[1] == "":
		return "", nil, usageErr(cmd, "empty COMMAND")
	}
	return args[0], args[1:], nil
}

func (e *env) run(cmd *cobra.Command, args []string, f *runFlags) error {
	key, argv, err := splitRunArgs(cmd, args)
	if err != nil {
		return err
	}
	if err := f.check(cmd); err != nil {
		return err
	}
	if err := checkMinHold(cmd, f.minHold); err != nil {
		return err
	}
	if err := checkKey(cmd, key); err != nil {
		return err
	}
	// Look COMMAND up before taking the lock: a typo must not hold it.
	path, err := exec.LookPath(argv[0])
	if err != nil {
		code := ExitNotFound
		if errors.Is(err, fs.ErrPermission) {
			code = ExitCannotExec
		}
		return exitWith(code, "run: %s", strings.TrimPrefix(err.Error(), "exec: "))
	}

	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	label := f.label
	if label == "" {
		label = commandLine(argv)
	}
	// The owner stays the default, this host and pid: the lock belongs to
	// this dlock process, and the file backend may free it at once if the
	// process dies.
	opts := []dlock.Option{dlock.WithAutoRefresh(true), dlock.WithLabel(label)}
	if f.maxHold > 0 {
		opts = append(opts, dlock.WithMaxHold(f.maxHold))
	}
	if f.minHold > 0 {
		opts = append(opts, dlock.WithMinHold(f.minHold))
	}
	lock, err := e.take(ctx, c, key, &f.acquireFlags, opts...)
	if err != nil {
		return e.quietConflict(err)
	}
	release := func() error {
		relCtx, cancel := e.cleanupContext(ctx)
		defer cancel()
		return lock.Release(relCtx)
	}

	// From here on signals are for the child. One that came between the
	// grant and this point has cancelled ctx instead: honour it.
	sigs := make(chan os.Signal, 8)
	undo := e.signals.divertTo(sigs)
	defer undo()
	var ie *interruptedError
	if errors.As(context.Cause(ctx), &ie) {
		_ = release()
		return fmt.Errorf("%w before %s started", ie, argv[0])
	}

	if _, ok := e.stderr.(*os.File); !ok {
		// exec copies a non-file stream on its own goroutine: our messages
		// must not interleave with (or, for a bytes.Buffer, be overwritten
		// by) that copy.
		e.stderr = &lockedWriter{w: e.stderr}
	}
	child := &exec.Cmd{
		Path:   path,
		Args:   argv,
		Env:    childEnv(lock, f.exportToken, e.backendURL),
		Stdin:  e.stdin,
		Stdout: e.stdout,
		Stderr: e.stderr,
		// Only matters when the streams are not files (tests): do not wait
		// forever for a grandchild that keeps a pipe open.
		WaitDelay: time.Second,
	}
	done, err := startChild(child)
	if err != nil {
		_ = release()
		return exitWith(ExitCannotExec, "run: cannot start %s: %v", argv[0], err)
	}

	lost, waitErr := e.supervise(child, lock, done, sigs, f.grace, argv[0])
	lostLate := lock.Err() // lost after the child exited but before the release?
	if relErr := release(); relErr != nil && lost == nil && lostLate == nil {
		fmt.Fprintf(e.stderr, "dlock: could not release %q: %s; it expires by itself within %v\n",
			key, oneLine(relErr.Error()), f.ttl)
	}
	status, statusErr := exitStatus(child, waitErr)
	switch {
	case lost != nil:
		return silentExit(ExitLost) // supervise said why
	case lostLate != nil && errors.Is(lostLate, dlock.ErrLockLost):
		return exitWith(ExitLost, "lock on %q lost as %s exited (status %d): %s",
			key, argv[0], status, oneLine(lostLate.Error()))
	case statusErr != nil:
		return exitWith(ExitInternal, "run: %s: %v", argv[0], statusErr)
	case status != 0:
		return silentExit(status)
	}
	return nil
}

// supervise waits for the child, passing it dlock's signals, and stops it
// when the lock is lost. It returns the loss (nil if the lock held until
// the child exited) and the child's Wait error.
//
// Why SIGTERM, a grace period, then SIGKILL: once the lock is gone another
// holder may start at any moment, so the child must stop touching the
// resource now; SIGTERM lets it stop cleanly (flush, roll back), and SIGKILL
// makes sure a child that ignores or is stuck on SIGTERM stops anyway.
func (e *env) supervise(child *exec.Cmd, lock *dlock.Lock, done <-chan error, sigs <-chan os.Signal,
	grace time.Duration, name string) (lost error, waitErr error) {
	lockDone := lock.Done()
	var kill <-chan time.Time
	for {
		select {
		case waitErr = <-done:
			return lost, waitErr
		case sig := <-sigs:
			_ = child.Process.Signal(sig) // fails only if it has just exited
		case <-lockDone:
			lockDone = nil
			lost = lock.Err()
			what := "lost the lock on %q: %s"
			if errors.Is(lost, dlock.ErrMaxHold) {
				what = "gave up the lock on %q: %s"
			}
			fmt.Fprintf(e.stderr, "dlock: "+what+"; stopping %s (SIGTERM, SIGKILL after %v)\n",
				lock.Key(), oneLine(lost.Error()), name, grace)
			_ = child.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			fmt.Fprintf(e.stderr, "dlock: %s still running %v after SIGTERM; sending SIGKILL\n", name, grace)
			_ = child.Process.Kill()
		}
	}
}

// startChild starts cmd and returns a channel that receives its Wait
// result. On Linux the child gets SIGKILL if dlock dies (Pdeathsig). That
// signal is tied to the thread that forked the child, not the process, so
// the fork happens on a goroutine locked to its thread that stays alive
// until the child has exited.
func startChild(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		setDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// exitStatus is the child's status as a shell reports it: its exit code,
// or 128+N if signal N killed it.
func exitStatus(cmd *exec.Cmd, waitErr error) (int, error) {
	ps := cmd.ProcessState
	if ps == nil {
		return 0, waitErr
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal()), nil
	}
	// A Wait error with a process state is about copying the streams
	// (WaitDelay); the status is still the child's.
	return ps.ExitCode(), nil
}

// childEnv is dlock's environment without stale DLOCK_* lock variables,
// plus those of lock.
func childEnv(lock *dlock.Lock, exportToken bool, backendURL string) []string {
	drop := []string{envKey, envFence, envLockID, tokenEnv}
	if backendURL != "" {
		drop = append(drop, backendEnv)
	}
	var env []string
outer:
	for _, kv := range os.Environ() {
		for _, name := range drop {
			if strings.HasPrefix(kv, name+"=") {
				continue outer
			}
		}
		env = append(env, kv)
	}
	env = append(env,
		envKey+"="+lock.Key(),
		envFence+"="+strconv.FormatUint(lock.Fence(), 10),
		envLockID+"="+lock.LockID())
	if exportToken {
		env = append(env, tokenEnv+"="+lock.Token())
	}
	if backendURL != "" {
		// So that `dlock release "$DLOCK_KEY"` in the child finds the store.
		env = append(env, backendEnv+"="+backendURL)
	}
	return env
}

// commandLine renders argv for the lock's label, quoting arguments the
// way a shell would need them, cut to maxLabel bytes.
func commandLine(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`;&|<>()*?[]#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts[i] = a
	}
	s := strings.Join(parts, " ")
	if len(s) <= maxLabel {
		return s
	}
	cut := maxLabel - 3
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
