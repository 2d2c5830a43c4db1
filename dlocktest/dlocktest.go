// Package dlocktest is the conformance suite every dlock backend must pass.
// A backend's test calls [Run] with a function that returns a fresh backend
// on a real store.
package dlocktest

import (
	"testing"

	"github.com/dlock-dev/dlock"
)

// Run runs the whole conformance suite as subtests of t. newBackend returns
// a backend on a real store; it is called once per subtest and may register
// cleanup with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) dlock.Backend) {
	t.Helper()
	_ = newBackend // TODO: filled in by the conformance-suite work
}
