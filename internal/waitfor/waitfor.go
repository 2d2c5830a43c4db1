// Package waitfor lets a test wait for a condition that becomes true in
// the background (a lease given back, a connection closed), failing the
// test if it does not within a bound far beyond any delay the code under
// test means to have, instead of sleeping a fixed time.
package waitfor

import (
	"testing"
	"time"
)

// Bound is how long Until waits at most.
const Bound = 30 * time.Second

// Until polls cond until it holds, failing t if it does not within Bound.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for: %s", Bound, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
