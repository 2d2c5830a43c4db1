package main

import (
	"testing"

	"github.com/dlock-dev/dlock/internal/bench"
)

// The median round is reported, but a violation in any round must show.
func TestMedianKeepsEveryViolation(t *testing.T) {
	rounds := []bench.Result{
		{PerSecond: 300, Ops: 3},
		{PerSecond: 100, Ops: 1, Violations: 2},
		{PerSecond: 200, Ops: 2, FenceRegressions: 1},
	}
	m := median(rounds)
	if m.Ops != 2 {
		t.Errorf("median picked the round with %d ops, want the 200/s one (2 ops)", m.Ops)
	}
	if m.Violations != 2 || m.FenceRegressions != 1 {
		t.Errorf("violations %d, fence regressions %d; want 2 and 1 from all rounds", m.Violations, m.FenceRegressions)
	}
	if rounds[1].Violations != 2 || rounds[0].PerSecond != 300 {
		t.Error("median changed its input")
	}
}
