package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/bench"
)

func TestBenchJSON(t *testing.T) {
	s := newStore(t)
	out, _ := s.mustDlock(ExitOK, "bench", "--duration", "50ms", "--workers", "2", "--hold", "0", "--json")
	var r bench.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a report: %v\n%s", err, out)
	}
	if r.Machine.Cores < 1 || r.Machine.GoVersion == "" {
		t.Errorf("machine %+v is missing cores or Go version", r.Machine)
	}
	if len(r.Floors) != 1 || r.Floors[0].Name != "file" || r.Floors[0].Pairs == 0 {
		t.Errorf("floors %+v, want one measured file floor", r.Floors)
	}
	if len(r.Results) != 3 {
		t.Fatalf("%d results, want serial, parallel and contended", len(r.Results))
	}
	for i, sc := range bench.Scenarios {
		res := r.Results[i]
		if res.Scenario != sc || res.Ops == 0 || res.Violations != 0 {
			t.Errorf("result %d: %s with %d ops and %d violations, want %s with ops and no violations",
				i, res.Scenario, res.Ops, res.Violations, sc)
		}
		if _, ok := res.PerOp[bench.CounterStoreOps]; !ok {
			t.Errorf("%s: no store ops count", sc)
		}
	}
	if r.Results[1].Workers != 2 || r.Results[2].Workers != 2 || r.Results[2].Hold != 0 {
		t.Errorf("workers/hold not applied: %+v", r.Results[2])
	}
}

func TestBenchText(t *testing.T) {
	s := newStore(t)
	out, errOut := s.mustDlock(ExitOK, "bench", "--scenario", "serial", "--duration", "30ms")
	for _, want := range []string{"machine:", "floor:", "serial", "pairs per second"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && (f[0] == "parallel" || f[0] == "contended") {
			t.Errorf("--scenario serial ran %s:\n%s", f[0], out)
		}
	}
	if !strings.Contains(errOut, "running serial") {
		t.Errorf("no progress on stderr: %q", errOut)
	}
	// Quiet: nothing but errors.
	if out, errOut := s.mustDlock(ExitOK, "bench", "-q", "--scenario", "serial", "--duration", "10ms"); out != "" || errOut != "" {
		t.Errorf("--quiet printed %q / %q", out, errOut)
	}
}

func TestBenchUsage(t *testing.T) {
	s := newStore(t)
	for _, args := range [][]string{
		{"bench", "--scenario", "bogus"},
		{"bench", "--workers", "0"},
		{"bench", "--duration", "0"},
		{"bench", "--hold", "-1s"},
		{"bench", "extra"},
	} {
		code, _, errOut := s.dlock(args...)
		if code != ExitUsage || !strings.Contains(errOut, "bench") {
			t.Errorf("dlock %q: exit %d, stderr %q; want 64 and a message naming bench", args, code, errOut)
		}
	}
}

func TestBenchBusyKeyIsAConflict(t *testing.T) {
	s := newStore(t)
	s.mustDlock(ExitOK, "acquire", "--ttl", "1m", bench.DefaultPrefix+"serial")
	code, _, errOut := s.dlock("bench", "--scenario", "serial", "--duration", "10ms")
	if code != ExitConflict || !strings.Contains(errOut, "another benchmark") {
		t.Fatalf("exit %d, stderr %q; want 75 saying another benchmark may be running", code, errOut)
	}
}
