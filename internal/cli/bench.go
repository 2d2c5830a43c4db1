package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/backendurl"
	"github.com/dlock-dev/dlock/internal/bench"
)

func newBenchCmd(e *env) *cobra.Command {
	f := benchFlags{
		scenario: "all",
		workers:  bench.DefaultWorkers,
		duration: bench.DefaultDuration,
		hold:     bench.DefaultHold,
	}
	cmd := &cobra.Command{
		Use:   "bench [flags]",
		Short: "Measure lock throughput, latency and fairness on a backend",
		Long: `Bench measures the backend on this machine, so that you can check the
figures dlock publishes (docs/bench.md) where you run it:

  serial     one worker takes and releases one key: pairs/s, p50/p99 per pair
  parallel   --workers workers, a key each: pairs/s
  contended  --workers workers wait for one key and hold it for --hold:
             grants/s, wait p50/p99/max, fairness (fewest/most grants of any
             worker), mutual-exclusion violations seen (must be 0), store
             operations per grant

It prints the machine (cores, CPU, Go version) and the store's raw floor: for
the file backend the system calls of two state changes, for Redis a plain
SET and DEL. Keys start with dlock-bench/; run one bench at a time per store,
on a store nothing else loads, and compare ratios rather than absolute
numbers on shared machines. Exits 70 if a violation was seen.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.bench(cmd, &f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.scenario, "scenario", f.scenario, "serial, parallel, contended or all")
	fs.IntVar(&f.workers, "workers", f.workers, "goroutines in parallel and contended (each with its own dlock client)")
	fs.Var(&durationValue{d: &f.duration}, "duration", "how long each scenario runs")
	fs.Var(&durationValue{d: &f.hold}, "hold", "time a contended worker holds the lock (0: release at once)")
	return cmd
}

type benchFlags struct {
	scenario string
	workers  int
	duration time.Duration
	hold     time.Duration
}

// scenarios returns the scenarios --scenario names.
func (f *benchFlags) scenarios(cmd *cobra.Command) ([]bench.Scenario, error) {
	if f.scenario == "all" {
		return bench.Scenarios, nil
	}
	for _, sc := range bench.Scenarios {
		if string(sc) == f.scenario {
			return []bench.Scenario{sc}, nil
		}
	}
	return nil, usageErr(cmd, "bad --scenario %q: use serial, parallel, contended or all", f.scenario)
}

// floorTime bounds the floor measurement: it is a reference, not the
// subject, so it gets half a scenario's time, at most a second.
func (f *benchFlags) floorTime() time.Duration { return min(f.duration/2, time.Second) }

func (e *env) bench(cmd *cobra.Command, f *benchFlags) error {
	ctx := cmd.Context()
	scenarios, err := f.scenarios(cmd)
	if err != nil {
		return err
	}
	switch {
	case f.workers < 1:
		return usageErr(cmd, "--workers must be at least 1")
	case f.duration == 0:
		return usageErr(cmd, "--duration must be positive")
	}
	b, err := openBackend(backendurl.WithTimeout(ctx, e.timeout), e.backendURL, os.Getenv)
	if err != nil {
		return err
	}
	if c, ok := b.(interface{ Close() error }); ok {
		defer c.Close()
	}

	report := bench.Report{Machine: bench.ThisMachine(), Backend: backendName(e.backendURL, os.Getenv)}
	subject := bench.Dlock("dlock", b)
	e.progress("measuring the store's floor")
	switch b := b.(type) {
	case *filelock.Backend:
		if fl, err := bench.FileFloor(ctx, b.Dir(), f.floorTime()); err != nil {
			report.Notes = append(report.Notes, fmt.Sprintf("no floor: %v", err))
		} else {
			report.Floors = append(report.Floors, fl)
		}
	case interface{ Client() redis.UniversalClient }:
		// The Redis backend lends its go-redis client: the floor and the
		// server's command counts go over the same connections.
		rdb := b.Client()
		if fl, err := bench.RedisFloor(ctx, rdb, bench.DefaultPrefix+"floor", f.floorTime()); err != nil {
			report.Notes = append(report.Notes, fmt.Sprintf("no floor: %v", err))
		} else {
			report.Floors = append(report.Floors, fl)
		}
		subject.Counters = append(subject.Counters, bench.RedisCommands(rdb), bench.RedisCPU(rdb), bench.RoundTrips(rdb))
	}
	if ctx.Err() != nil {
		return benchError(ctx, ctx.Err())
	}

	cfg := bench.Config{Workers: f.workers, Duration: f.duration, Hold: f.hold}
	if f.hold == 0 {
		cfg.Hold = -1 // Config's zero means the default
	}
	for _, sc := range scenarios {
		e.progress("running %s for %v", sc, f.duration)
		res, err := bench.Run(ctx, sc, subject, cfg)
		if err != nil {
			return benchError(ctx, err)
		}
		report.Results = append(report.Results, res)
	}

	if e.json {
		if err := e.printJSON(report); err != nil {
			return err
		}
	} else if !e.quiet {
		if err := bench.WriteText(e.stdout, report, bench.TableOptions{}); err != nil {
			return err
		}
	}
	if i := slices.IndexFunc(report.Results, func(r bench.Result) bool {
		return r.Violations+r.FenceRegressions > 0
	}); i >= 0 {
		r := report.Results[i]
		return exitWith(ExitInternal, "bench: %s: %d mutual-exclusion violations and %d fence regressions seen",
			r.Scenario, r.Violations, r.FenceRegressions)
	}
	return nil
}

// benchError maps a failed run to its exit status: 128+N after signal N,
// 75 when a bench key was held by someone else, else the error's kind
// (unavailable store, ...).
func benchError(ctx context.Context, err error) error {
	var ie *interruptedError
	if errors.As(context.Cause(ctx), &ie) {
		return fmt.Errorf("%w during the bench", ie)
	}
	if errors.Is(err, bench.ErrBusy) {
		return exitWith(ExitConflict, "%v", err)
	}
	return err
}

// progress tells a person at the terminal what the silent seconds are.
func (e *env) progress(format string, args ...any) {
	if e.quiet || e.json {
		return
	}
	fmt.Fprintf(e.stderr, "dlock bench: "+format+"\n", args...)
}

// backendName is the backend URL as the report shows it: password
// redacted, the default directory spelled out.
func backendName(raw string, getenv func(string) string) string {
	if raw == "" {
		raw = getenv(backendEnv)
	}
	if raw == "" {
		dir, err := filelock.DefaultDir()
		if err != nil {
			return "file (default directory)"
		}
		return "file://" + dir
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return strings.TrimSpace(u.Redacted())
}
