package bench

import (
	"os"
	"testing"
	"time"

	"github.com/dlock-dev/dlock/filelock"
)

func TestFileFloorLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	fl, err := FileFloor(t.Context(), dir, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if fl.Pairs == 0 || fl.PairsPerSecond <= 0 || fl.Latency.P50 <= 0 {
		t.Fatalf("floor %+v measured nothing", fl)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("floor left %d files in %s", len(entries), dir)
	}
}

func TestFileScenarios(t *testing.T) {
	be, err := filelock.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	s := Dlock("file", be)
	for _, sc := range Scenarios {
		t.Run(string(sc), func(t *testing.T) {
			res, err := Run(t.Context(), sc, s, Config{Ops: 40, Workers: 3, Hold: -1, Prefix: prefix(t)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Ops != 40 || res.Violations != 0 || res.FenceRegressions != 0 {
				t.Fatalf("ops %d violations %d regressions %d", res.Ops, res.Violations, res.FenceRegressions)
			}
		})
	}
}
