package pglock_test

import (
	"testing"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
)

// TestConformance runs the whole suite on a real PostgreSQL server, each
// subtest on a table of its own.
func TestConformance(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	dlocktest.Run(t, func(t *testing.T) dlock.Backend {
		return newBackend(t, pool)
	})
}
