package stress

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dlock-dev/dlock/internal/fence"
)

// WorkerCommand is the name of the hidden dlock subcommand that runs
// [Work]. [Run] launches `dlock run KEY -- dlock stress-worker ...`.
const WorkerCommand = "stress-worker"

// ConflictExit is the status `dlock run` exits with when the lock is held
// by someone else; a run that ends with it, without having held the lock,
// was refused.
const ConflictExit = 75

// Config describes one stress run.
type Config struct {
	N    int           // processes to launch, at least 1
	Mode Mode          // exclusive (refuse when held) or queue (wait)
	Key  string        // the key every run locks
	Hold time.Duration // how long the default job holds the lock
	TTL  time.Duration // --ttl of each `dlock run`
	// MinHold is --min-hold of each `dlock run` (0: none): the key stays
	// taken that long after each grant, so that one run at most starts in
	// any such period.
	MinHold time.Duration
	// Wait is how long a queued run waits for the lock (--wait); a
	// negative value waits forever. Ignored in exclusive mode.
	Wait time.Duration

	// Dlock is how to run dlock: the path of the binary, plus any leading
	// arguments (a test binary standing in for dlock needs one).
	Dlock []string
	// Global are flags given to every dlock before the subcommand, such as
	// --backend URL and --timeout D.
	Global []string
	// Command, if set, is the job each run performs under the lock instead
	// of holding for Hold. It gets DLOCK_FENCE, DLOCK_LOCK_ID, DLOCK_KEY and
	// DLOCK_STRESS_RUN in its environment.
	Command []string

	// Dir is a scratch directory for the results file, the fenced resource
	// and the processes' output. It must exist and be private to this run.
	Dir string

	// OnExit, if set, is called as each process exits.
	OnExit func(Proc)
}

// Result is what [Run] found.
type Result struct {
	Launched *Launched
	Records  []Record      // one per run, indexed by run id
	Resource []fence.Entry // the fenced resource's accepted writes, in order
	Verdict  Verdict
}

// Run launches cfg.N `dlock run` processes of the stress job at once,
// waits for all of them and judges the outcome with [Check]. A non-nil
// error means the stress could not be carried out, or was interrupted
// (ctx's error, with the partial result): a lock that misbehaves is not an
// error but a verdict that is not clean.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	resourcePath := filepath.Join(cfg.Dir, "resource")
	resultsPath := filepath.Join(cfg.Dir, "results.jsonl")
	outDir := filepath.Join(cfg.Dir, "out")
	if err := os.Mkdir(outDir, 0o700); err != nil {
		return nil, fmt.Errorf("stress: %w", err)
	}
	res, err := fence.Open(resourcePath)
	if err != nil {
		return nil, err
	}
	launched, launchErr := Launch(ctx, LaunchConfig{
		N:         cfg.N,
		Argv:      func(i int) []string { return cfg.argv(i, resourcePath, resultsPath) },
		OutputDir: outDir,
		OnExit:    cfg.OnExit,
	})
	if launched == nil {
		return nil, launchErr
	}
	workers, err := readResults(resultsPath)
	if err != nil {
		return nil, err
	}
	// The resource is read without ctx's cancellation: every process has
	// exited, so nothing holds its flock for long.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	entries, err := res.Entries(rctx)
	if err != nil {
		return nil, err
	}
	if entries == nil {
		entries = []fence.Entry{} // nil would tell Check to skip the cross-check
	}
	r := &Result{Launched: launched, Resource: entries, Records: make([]Record, cfg.N)}
	for i, p := range launched.Procs {
		r.Records[i] = classify(p, workers[i])
	}
	r.Verdict = Check(Log{N: cfg.N, Mode: cfg.Mode, Records: r.Records, Resource: entries, MinHold: cfg.MinHold})
	return r, launchErr
}

func (cfg *Config) check() error {
	switch {
	case cfg.N < 1:
		return fmt.Errorf("stress: N must be at least 1, got %d", cfg.N)
	case cfg.Mode != Exclusive && cfg.Mode != Queue:
		return fmt.Errorf("stress: unknown mode %q", cfg.Mode)
	case len(cfg.Dlock) == 0:
		return errors.New("stress: no dlock command")
	case cfg.Dir == "":
		return errors.New("stress: no scratch directory")
	}
	return nil
}

// argv is the command line of run i:
//
//	dlock GLOBAL run --ttl T --wait W [--min-hold M] --label "dlock stress run i" KEY --
//	      dlock stress-worker --run i --hold H --resource R --results F [-- COMMAND...]
func (cfg *Config) argv(i int, resource, results string) []string {
	wait := "0"
	if cfg.Mode == Queue {
		wait = "forever"
		if cfg.Wait >= 0 {
			wait = cfg.Wait.String()
		}
	}
	argv := append([]string(nil), cfg.Dlock...)
	argv = append(argv, cfg.Global...)
	argv = append(argv, "run", "--ttl", cfg.TTL.String(), "--wait", wait)
	if cfg.MinHold > 0 {
		argv = append(argv, "--min-hold", cfg.MinHold.String())
	}
	argv = append(argv, "--label", "dlock stress run "+strconv.Itoa(i), cfg.Key, "--")
	argv = append(argv, cfg.Dlock...)
	argv = append(argv, WorkerCommand, "--run", strconv.Itoa(i), "--hold", cfg.Hold.String(),
		"--resource", resource, "--results", results)
	if len(cfg.Command) > 0 {
		argv = append(argv, "--")
		argv = append(argv, cfg.Command...)
	}
	return argv
}

// readResults reads the workers' lines, keyed by run id. A missing file
// means no run held the lock.
func readResults(path string) (map[int]*WorkerRecord, error) {
	out := map[int]*WorkerRecord{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stress: results: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var w WorkerRecord
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
			return nil, fmt.Errorf("stress: results line %d: %w", n, err)
		}
		if prev, dup := out[w.Run]; dup {
			// Cannot happen with one worker per run; if it does, the run
			// must not look clean.
			prev.Error = strings.TrimPrefix(prev.Error+"; ", "; ") + "more than one results line"
			continue
		}
		out[w.Run] = &w
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("stress: results: %w", err)
	}
	return out, nil
}

// classify turns what the launcher saw of run p.Index, and the worker's
// line if the run held the lock, into its record.
func classify(p Proc, w *WorkerRecord) Record {
	r := Record{
		Run: p.Index, PID: p.PID, Launched: p.Launched, Exited: p.Exited,
		ExitCode: p.ExitCode, Output: p.Output,
	}
	if w != nil {
		r.Held, r.Start, r.Finish, r.Fence, r.LockID = true, w.Start, w.Finish, w.Fence, w.LockID
	}
	last := lastLine(p.Output)
	switch {
	case p.StartErr != nil:
		r.Outcome, r.Reason = Failed, "could not start: "+p.StartErr.Error()
	case w != nil && w.Error != "":
		r.Outcome, r.Reason = Failed, w.Error
	case w != nil && p.ExitCode == 0:
		r.Outcome = Ran
	case w != nil:
		r.Outcome, r.Reason = Failed, withLine(fmt.Sprintf("dlock exited %d after the job finished", p.ExitCode), last)
	case p.ExitCode == ConflictExit:
		r.Outcome, r.Reason = Refused, last
	default:
		r.Outcome, r.Reason = Failed, withLine(fmt.Sprintf("exit status %d with no report from the job", p.ExitCode), last)
	}
	if strings.TrimSpace(r.Output) == r.Reason {
		r.Output = "" // said once is enough
	}
	return r
}

func withLine(s, line string) string {
	if line == "" {
		return s
	}
	return s + ": " + line
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
