package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/stress"
)

// ExitStressFailed is the status of `dlock stress` when the verdict is not
// clean (an overlap, a fence out of order, a process unaccounted for or
// failed).
const ExitStressFailed = 1

// selfCommand returns how to start this dlock binary. Tests, whose binary
// doubles as dlock only with a leading argument, replace it.
var selfCommand = func() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe}, nil
}

type stressFlags struct {
	n        int
	mode     string
	hold     time.Duration
	ttl      time.Duration
	wait     time.Duration
	minHold  time.Duration
	key      string
	report   string
	timeline string
	progress string
	floor    bool
}

// maxStressN bounds -n: far more processes than one host needs to show a
// lock working, and still within what a machine survives.
const maxStressN = 100000

func newStressCmd(e *env) *cobra.Command {
	var f stressFlags
	cmd := &cobra.Command{
		Use:   "stress [flags] [-- COMMAND [ARGS...]]",
		Short: "Launch many `dlock run` processes at once and check that the lock held",
		Long: `Stress starts -n real OS processes as close to simultaneously as the machine
allows, each one 'dlock run KEY -- JOB' against the same key and backend,
waits for all of them and judges what happened.

The default JOB notes the wall-clock time, writes "start" through a fenced
resource (a file that refuses writes with a fence lower than one it has
accepted) using the grant's DLOCK_FENCE, holds the lock for --hold, writes
"finish" and notes the time again. With -- COMMAND, COMMAND is run in place
of the hold, with DLOCK_STRESS_RUN (0..n-1) in its environment besides
DLOCK_KEY, DLOCK_FENCE and DLOCK_LOCK_ID.

--mode exclusive: a run that finds the lock held is refused at once (exit 75,
"already running"). --mode queue: every run waits (up to --wait) and all n
run, one at a time. --min-hold D (exclusive mode) passes --min-hold D to
every run: a job that must run once per period, started by many at once;
the verdict then also checks that no two runs started within D of each
other (less a second for a run's start-up).

The verdict is clean when no two critical sections overlap (on this host's
clock, cross-checked with the order the fenced resource accepted the runs),
the fences of successive holders strictly increase, every process is
accounted for as ran, refused or failed, none failed for a reason other than
the lock, and in queue mode none was refused.

A progress bar is shown on stderr when it is a terminal (--progress). The
summary gives the processes launched, ran, refused and failed, the overlaps,
the launch spread (first process start to last), the wall time, and in queue
mode the p50/p99 wait from launch to the start of the critical section.
--floor first launches n trivial 'true' processes the same way, to show
what process start-up alone costs.

Exit status: 0 when the verdict is clean, 1 when it is not; 64 for a bad
command line, 69 when the store cannot be reached (checked before anything
is launched), 128+N when interrupted by signal N.`,
		Example: `  dlock stress                                   # 1000 runs, exclusive, 1s hold
  dlock stress -n 200 --mode queue --hold 10ms   # all 200 run, one at a time
  dlock stress --min-hold 1m                     # once per minute: of 1000, one runs
  dlock stress -n 50 --report runs.jsonl --timeline runs.svg
  dlock stress --backend file:///tmp/locks -n 100 -- ./job.sh`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.stress(cmd, args, &f)
		},
	}
	fs := cmd.Flags()
	fs.IntVarP(&f.n, "count", "n", 1000, "number of processes to launch")
	fs.StringVar(&f.mode, "mode", string(stress.Exclusive), "exclusive (refuse when held) or queue (wait in line)")
	f.hold = time.Second
	fs.Var(&durationValue{d: &f.hold}, "hold", "how long the default job holds the lock")
	fs.Var(&durationValue{d: &f.ttl}, "ttl", "--ttl of each dlock run (default: 3 x --hold, at least 10s)")
	fs.Var(&waitValue{d: &f.wait}, "wait", `queue mode: how long each run waits for the lock (default: n x (hold + 1s) + 1m)`)
	fs.Var(&durationValue{d: &f.minHold}, "min-hold", "exclusive mode: each run's --min-hold; the verdict checks that runs start at least this far apart")
	fs.StringVar(&f.key, "key", "dlock-stress", "the key every run locks")
	fs.StringVar(&f.report, "report", "", "write the per-run log to FILE as JSON lines")
	fs.StringVar(&f.timeline, "timeline", "", "draw the runs on a time axis into FILE.svg (or FILE.html)")
	fs.StringVar(&f.progress, "progress", "auto", "progress bar on stderr: auto (if a terminal), always or never")
	fs.BoolVar(&f.floor, "floor", false, "first launch n 'true' processes the same way, to measure process start-up alone")
	return cmd
}

func (e *env) stress(cmd *cobra.Command, args []string, f *stressFlags) error {
	cfg, err := f.config(cmd, args)
	if err != nil {
		return err
	}
	ctx := cmd.Context()

	// Check the store once before launching n processes that would each
	// fail the same way.
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	octx, cancel := e.opContext(ctx)
	_, _, err = c.Inspect(octx, cfg.Key)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("stress: %w: no answer within --timeout %v", dlock.ErrUnavailable, e.timeout)
		}
		return err
	}

	if cfg.Dlock, err = selfCommand(); err != nil {
		return exitWith(ExitInternal, "stress: cannot find the dlock binary: %v", err)
	}
	if e.backendURL != "" {
		cfg.Global = append(cfg.Global, "--backend", e.backendURL)
	}
	cfg.Global = append(cfg.Global, "--timeout", e.timeout.String())
	cfg.Dir, err = os.MkdirTemp("", "dlock-stress-")
	if err != nil {
		return exitWith(ExitInternal, "stress: %v", err)
	}
	defer os.RemoveAll(cfg.Dir)

	var floor *stress.Floor
	if f.floor {
		if floor, err = e.stressFloor(ctx, cfg.N, f.progress); err != nil {
			return err
		}
	}

	bar := e.progressBar(f.progress, cfg.N, "dlock stress")
	if bar != nil {
		cfg.OnExit = func(stress.Proc) { _ = bar.Add(1) }
	}
	res, runErr := stress.Run(ctx, cfg)
	if bar != nil {
		_ = bar.Finish() // and clear it: the summary follows
	}
	if res == nil {
		return e.stressError(ctx, runErr)
	}

	sum := stress.Summarize(cfg, res)
	sum.Floor = floor
	sum.Interrupted = runErr != nil
	if f.report != "" {
		if err := writeFileWith(f.report, func(w *os.File) error { return stress.WriteReport(w, res.Records) }); err != nil {
			return exitWith(ExitInternal, "stress: --report: %v", err)
		}
	}
	if f.timeline != "" {
		opt := stress.TimelineOptions{
			Title: fmt.Sprintf("dlock stress: %d processes, %s mode, key %q", cfg.N, cfg.Mode, cfg.Key),
			HTML:  isHTML(f.timeline),
		}
		if err := writeFileWith(f.timeline, func(w *os.File) error {
			return stress.WriteTimeline(w, res.Records, res.Verdict, opt)
		}); err != nil {
			return exitWith(ExitInternal, "stress: --timeline: %v", err)
		}
	}
	switch {
	case e.json:
		if err := e.printJSON(sum); err != nil {
			return err
		}
	case !e.quiet:
		if err := sum.WriteText(e.stdout); err != nil {
			return err
		}
	}
	if runErr != nil {
		// Interrupted: what ran was shown, but it is no verdict.
		return e.stressError(ctx, runErr)
	}
	if !res.Verdict.Clean {
		if e.quiet {
			p := res.Verdict.Problems[0]
			return exitWith(ExitStressFailed, "stress: verdict FAILED (%d problems); first: %s: %s",
				len(res.Verdict.Problems), p.Kind, p.Message)
		}
		return silentExit(ExitStressFailed)
	}
	return nil
}

// config turns the flags and COMMAND into a stress configuration.
func (f *stressFlags) config(cmd *cobra.Command, args []string) (stress.Config, error) {
	var cfg stress.Config
	if dash := cmd.ArgsLenAtDash(); dash != 0 && len(args) > 0 {
		return cfg, usageErr(cmd, "unexpected argument %q; put COMMAND after --", args[0])
	}
	if len(args) > 0 && args[0] == "" {
		return cfg, usageErr(cmd, "empty COMMAND")
	}
	mode, err := stress.ParseMode(f.mode)
	if err != nil {
		return cfg, usageErr(cmd, "--mode %q: want exclusive or queue", f.mode)
	}
	if f.n < 1 || f.n > maxStressN {
		return cfg, usageErr(cmd, "-n %d is outside 1..%d", f.n, maxStressN)
	}
	if err := checkKey(cmd, f.key); err != nil {
		return cfg, err
	}
	switch f.progress {
	case "auto", "always", "never":
	default:
		return cfg, usageErr(cmd, "--progress %q: want auto, always or never", f.progress)
	}
	if f.timeline != "" && !isHTML(f.timeline) && !strings.EqualFold(filepath.Ext(f.timeline), ".svg") {
		return cfg, usageErr(cmd, "--timeline %q: the file name must end in .svg or .html", f.timeline)
	}
	ttl := f.ttl
	if ttl == 0 {
		// Comfortably above the hold, though `dlock run` refreshes anyway:
		// 1000 processes starting on two cores can delay a refresh.
		ttl = max(3*f.hold, 10*time.Second)
	}
	if err := dlock.ValidateTTL(ttl); err != nil {
		return cfg, usageErr(cmd, "bad --ttl: %v is outside %v..%v", ttl, dlock.MinTTL, dlock.MaxTTL)
	}
	wait := f.wait
	if mode == stress.Queue && !cmd.Flags().Changed("wait") {
		// Long enough for all n to go through one at a time, with a
		// second for each hand-over (hundreds of waiters on two cores
		// make hand-overs slow), yet bounded so that a lock that never
		// frees up ends in a verdict rather than a hang.
		wait = time.Duration(f.n)*(f.hold+time.Second) + time.Minute
	}
	if wait == waitForever {
		wait = -1
	}
	if mode == stress.Exclusive && cmd.Flags().Changed("wait") {
		return cfg, usageErr(cmd, "--wait is for --mode queue; exclusive runs never wait")
	}
	if f.minHold > 0 && mode == stress.Queue {
		return cfg, usageErr(cmd, "--min-hold is for --mode exclusive; queued runs would each keep the key for it")
	}
	if err := checkMinHold(cmd, f.minHold); err != nil {
		return cfg, err
	}
	return stress.Config{
		N: f.n, Mode: mode, Key: f.key, Hold: f.hold, TTL: ttl, Wait: wait, MinHold: f.minHold, Command: args,
	}, nil
}

// stressFloor launches n `true` processes the way the stress launches
// dlock: the floor under the stress's wall time.
func (e *env) stressFloor(ctx context.Context, n int, progress string) (*stress.Floor, error) {
	path, err := exec.LookPath("true")
	if err != nil {
		return nil, exitWith(ExitInternal, "stress: --floor: %v", err)
	}
	bar := e.progressBar(progress, n, "floor: true")
	cfg := stress.LaunchConfig{N: n, Argv: func(int) []string { return []string{path} }}
	if bar != nil {
		cfg.OnExit = func(stress.Proc) { _ = bar.Add(1) }
	}
	l, err := stress.Launch(ctx, cfg)
	if bar != nil {
		_ = bar.Finish() // and clear it: the summary follows
	}
	if err != nil {
		return nil, e.stressError(ctx, err)
	}
	for _, p := range l.Procs {
		if p.StartErr != nil || p.ExitCode != 0 {
			return nil, exitWith(ExitInternal, "stress: --floor: %s: exit %d %v", path, p.ExitCode, p.StartErr)
		}
	}
	return stress.FloorOf("true", l), nil
}

// stressError maps an error of the stress machinery to an exit: a signal's
// 128+N, else an internal error.
func (e *env) stressError(ctx context.Context, err error) error {
	var ie *interruptedError
	if errors.As(context.Cause(ctx), &ie) {
		return fmt.Errorf("stress: %w", ie)
	}
	if errors.As(err, new(*exitError)) {
		return err
	}
	return exitWith(ExitInternal, "%v", err)
}

// progressBar returns a bar of n steps on stderr, or nil when none is to
// be shown: "never", or "auto" and stderr is not a terminal, or --quiet or
// --json.
func (e *env) progressBar(mode string, n int, what string) *progressbar.ProgressBar {
	if mode == "never" || e.quiet || e.json {
		return nil
	}
	if mode == "auto" && !e.stderrTerminal() {
		return nil
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(50*time.Millisecond),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
	)
}

func isHTML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".html" || ext == ".htm"
}

// writeFileWith creates path and fills it with write.
func writeFileWith(path string, write func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
