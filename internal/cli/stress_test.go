package cli

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/stress"
)

func init() {
	// The processes `dlock stress` launches are this test binary acting as
	// dlock (see TestMain). Set once, before any test runs, so that no test
	// races another over it.
	selfCommand = func() ([]string, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		return []string{exe, asDlock}, nil
	}
}

// stressSummary is the part of `dlock stress --json` the tests read.
type stressSummary struct {
	Mode      string  `json:"mode"`
	Launched  int     `json:"launched"`
	Ran       int     `json:"ran"`
	Refused   int     `json:"refused"`
	Failed    int     `json:"failed"`
	Overlaps  int     `json:"overlaps"`
	MinHoldMS float64 `json:"min_hold_ms"`
	WaitP50   float64 `json:"wait_p50_ms"`
	Verdict   struct {
		Clean    bool `json:"clean"`
		Problems []struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
		} `json:"problems"`
	} `json:"verdict"`
}

// runStress runs `dlock stress` in-process against a fresh file store and
// returns its exit status, JSON summary and stderr.
func runStress(t *testing.T, args ...string) (int, stressSummary, string) {
	t.Helper()
	return runStressIn(t, newStore(t), args...)
}

// runStressIn is runStress against the store s.
func runStressIn(t *testing.T, s *store, args ...string) (int, stressSummary, string) {
	t.Helper()
	// The launched test binaries are built with -race, which sleeps a
	// second at exit by default: not here.
	t.Setenv("GORACE", os.Getenv("GORACE")+" atexit_sleep_ms=0")
	code, out, errOut := s.dlock(append([]string{"--json", "stress", "--progress", "never"}, args...)...)
	var sum stressSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("stress %q: exit %d, stdout is not the JSON summary: %v\nstdout: %s\nstderr: %s", args, code, err, out, errOut)
	}
	return code, sum, errOut
}

func readReport(t *testing.T, path string) []stress.Record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []stress.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r stress.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("report line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestStressExclusive(t *testing.T) {
	dir := t.TempDir()
	report, timeline := filepath.Join(dir, "runs.jsonl"), filepath.Join(dir, "runs.svg")
	code, sum, errOut := runStress(t, "-n", "20", "--hold", "20ms", "--key", "stress-excl",
		"--report", report, "--timeline", timeline)
	if code != 0 || !sum.Verdict.Clean {
		t.Fatalf("exit %d, verdict %+v\nstderr: %s", code, sum.Verdict, errOut)
	}
	if sum.Launched != 20 || sum.Ran < 1 || sum.Ran+sum.Refused != 20 || sum.Failed != 0 || sum.Overlaps != 0 {
		t.Errorf("summary %+v", sum)
	}
	recs := readReport(t, report)
	if len(recs) != 20 {
		t.Fatalf("report has %d lines, want 20", len(recs))
	}
	ran := 0
	for i, r := range recs {
		if r.Run != i || r.PID == 0 {
			t.Errorf("report line %d: %+v", i, r)
		}
		switch r.Outcome {
		case stress.Ran:
			ran++
			if !r.Held || r.Fence == 0 || r.LockID == "" || r.ExitCode != 0 {
				t.Errorf("ran: %+v", r)
			}
		case stress.Refused:
			if r.Held || r.ExitCode != ExitConflict || !strings.Contains(r.Reason, "stress-excl") {
				t.Errorf("refused: %+v", r)
			}
		default:
			t.Errorf("unexpected outcome: %+v", r)
		}
	}
	if ran != sum.Ran {
		t.Errorf("report has %d runs that ran, summary %d", ran, sum.Ran)
	}
	svg, err := os.ReadFile(timeline)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(svg), `class="bar"`); n != sum.Ran {
		t.Errorf("timeline has %d bars, want one per run that ran (%d)", n, sum.Ran)
	}
}

// TestStressMinHold: with --min-hold every run is `dlock run --min-hold`,
// so one run holds the lock and every later one is refused, and the key is
// still taken after the stress, when every process has exited.
func TestStressMinHold(t *testing.T) {
	s := newStore(t)
	code, sum, errOut := runStressIn(t, s, "-n", "10", "--hold", "20ms", "--min-hold", "1m", "--key", "stress-minhold")
	if code != 0 || !sum.Verdict.Clean {
		t.Fatalf("exit %d, verdict %+v\nstderr: %s", code, sum.Verdict, errOut)
	}
	if sum.Ran != 1 || sum.Refused != 9 || sum.MinHoldMS != 60000 {
		t.Errorf("summary %+v, want 1 ran, 9 refused, min hold 60000ms", sum)
	}
	if code, _, _ := s.dlock("run", "stress-minhold", "--", "true"); code != ExitConflict {
		t.Errorf("a run after the stress: exit %d, want %d (the key kept for 1m)", code, ExitConflict)
	}
}

func TestStressQueue(t *testing.T) {
	code, sum, errOut := runStress(t, "-n", "10", "--mode", "queue", "--hold", "20ms", "--key", "stress-queue")
	if code != 0 || !sum.Verdict.Clean {
		t.Fatalf("exit %d, verdict %+v\nstderr: %s", code, sum.Verdict, errOut)
	}
	if sum.Mode != "queue" || sum.Launched != 10 || sum.Ran != 10 || sum.Refused != 0 || sum.Overlaps != 0 {
		t.Errorf("summary %+v", sum)
	}
	if sum.WaitP50 <= 0 {
		t.Errorf("p50 wait %vms, want a positive wait", sum.WaitP50)
	}
}

// TestStressFailingJob runs a COMMAND that fails under the lock: the runs
// that held it failed for a reason other than the lock, so the verdict is
// not clean and the exit status says so.
func TestStressFailingJob(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip(err)
	}
	code, sum, errOut := runStress(t, "-n", "4", "--mode", "queue", "--key", "stress-fail",
		"--", sh, "-c", `echo "run $DLOCK_STRESS_RUN fence $DLOCK_FENCE"; exit 3`)
	if code != ExitStressFailed || sum.Verdict.Clean {
		t.Fatalf("exit %d, verdict %+v; want %d and a failed verdict\nstderr: %s", code, sum.Verdict, ExitStressFailed, errOut)
	}
	if sum.Failed != 4 || sum.Overlaps != 0 {
		t.Errorf("summary %+v, want 4 failed and no overlaps", sum)
	}
	for _, p := range sum.Verdict.Problems {
		if p.Kind != string(stress.KindFailed) || !strings.Contains(p.Message, "exited 3") {
			t.Errorf("problem %+v, want a failure naming exit 3", p)
		}
	}
}

func TestStressTextSummary(t *testing.T) {
	t.Setenv("GORACE", os.Getenv("GORACE")+" atexit_sleep_ms=0")
	s := newStore(t)
	out, _ := s.mustDlock(0, "stress", "-n", "3", "--hold", "10ms", "--key", "stress-text", "--progress", "never")
	for _, want := range []string{"3 processes, exclusive mode", "launched", "overlaps       0", "verdict: clean"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestStressProgressBar(t *testing.T) {
	t.Setenv("GORACE", os.Getenv("GORACE")+" atexit_sleep_ms=0")
	s := newStore(t)
	_, errOut := s.mustDlock(0, "stress", "-n", "3", "--hold", "10ms", "--key", "stress-bar", "--progress", "always")
	// The bar is throttled, so which counts it drew varies; it is
	// cleared at the end, before the summary.
	if !strings.Contains(errOut, "dlock stress") || !strings.Contains(errOut, "/3)") {
		t.Errorf("stderr shows no progress bar: %q", errOut)
	}
}

func TestStressUsage(t *testing.T) {
	s := newStore(t)
	for _, args := range [][]string{
		{"stress", "--mode", "fifo"},
		{"stress", "-n", "0"},
		{"stress", "--wait", "1s"},
		{"stress", "--timeline", "x.png"},
		{"stress", "--progress", "sometimes"},
		{"stress", "--ttl", "1ms"},
		{"stress", "--key", ""},
		{"stress", "--mode", "queue", "--min-hold", "1m"},
		{"stress", "--min-hold", "-1s"},
		{"stress", "stray"},
	} {
		code, out, errOut := s.dlock(args...)
		if code != ExitUsage {
			t.Errorf("%q: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, ExitUsage, out, errOut)
			continue
		}
		oneLineContaining(t, errOut, "stress")
	}
}

func TestStressUnavailableStore(t *testing.T) {
	// A file where the store's directory should be: nothing is launched.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain(t, "--backend", "file://"+file, "stress", "-n", "5")
	if code != ExitUnavailable || out != "" {
		t.Errorf("exit %d, stdout %q, want %d and nothing\nstderr: %s", code, out, ExitUnavailable, errOut)
	}
}

func TestStressWorkerOutsideRun(t *testing.T) {
	t.Setenv("DLOCK_FENCE", "")
	dir := t.TempDir()
	code, _, errOut := runMain(t, stress.WorkerCommand, "--resource", filepath.Join(dir, "r"),
		"--results", filepath.Join(dir, "res"))
	if code == 0 {
		t.Fatal("stress-worker succeeded outside dlock run")
	}
	oneLineContaining(t, errOut, "not run under dlock run")
}

func TestStressWorkerIsHidden(t *testing.T) {
	_, out, _ := runMain(t, "--help")
	if strings.Contains(out, stress.WorkerCommand) {
		t.Errorf("help lists the hidden %s:\n%s", stress.WorkerCommand, out)
	}
	if !strings.Contains(out, "stress") {
		t.Errorf("help does not list stress:\n%s", out)
	}
}
