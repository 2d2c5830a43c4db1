package pglock_test

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
)

// TestConformance runs the whole suite on a real PostgreSQL server, each
// subtest on a table of its own. Short leases are a second rather than the
// suite's 150 ms: the watchdog refreshes at a third of the TTL, and a
// refresh through a server that shares two cores with the
// race-instrumented tests missed a 150 ms validity once on a loaded
// machine, and a 300 ms one (its first refresh took over 195 ms) in CI
// with two busy loops beside it.
func TestConformance(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	dlocktest.RunConfig(t, dlocktest.Config{ShortTTL: time.Second}, func(t *testing.T) dlock.Backend {
		return newBackend(t, pool)
	})
}
