package dlock_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

// uniqueKey returns a key no other test uses.
func uniqueKey(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return t.Name() + "-" + hex.EncodeToString(b[:])
}

// newFaulty returns a client over a Faulty wrapper of a memory backend, and
// the two backends, so a test can inject faults and look at the store
// behind them.
func newFaulty(t *testing.T, opts ...dlock.Option) (*dlock.Client, *dlocktest.Faulty, *memlock.Backend) {
	t.Helper()
	mem := memlock.New()
	f := &dlocktest.Faulty{Backend: mem}
	return dlock.New(f, opts...), f, mem
}

// waitDone waits for l's lost signal, failing the test after a bound far
// beyond any TTL the tests use.
func waitDone(t *testing.T, l *dlock.Lock) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("Done of lock %q did not close", l.Key())
	}
}

// mustTry takes key at once or fails the test.
func mustTry(t *testing.T, c *dlock.Client, key string, opts ...dlock.Option) *dlock.Lock {
	t.Helper()
	l, err := c.TryAcquire(t.Context(), key, opts...)
	if err != nil {
		t.Fatalf("TryAcquire(%q): %v", key, err)
	}
	return l
}
