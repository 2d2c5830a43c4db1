package pglock_test

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
)

// TestConformance runs the whole suite on a real PostgreSQL server, each
// subtest on a table of its own. Short leases are 300 ms rather than the
// suite's 150: the watchdog refreshes at a third of the TTL, and a refresh
// through a server that shares two cores with the race-instrumented test
// missed a 150 ms validity once, on a loaded machine.
func TestConformance(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	dlocktest.RunConfig(t, dlocktest.Config{ShortTTL: 300 * time.Millisecond}, func(t *testing.T) dlock.Backend {
		return newBackend(t, pool)
	})
}
