package memcachelock_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/memcachelock"
)

// uniquePrefix returns an item-key prefix no other test uses, so that tests
// sharing one memcached see private namespaces.
func uniquePrefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + ":"
}

// newBackend returns a backend on servers with a prefix of its own, closed
// when t ends.
func newBackend(t testing.TB, servers []string, opts ...memcachelock.Option) *memcachelock.Backend {
	t.Helper()
	b, err := memcachelock.New(servers, append([]memcachelock.Option{memcachelock.WithPrefix(uniquePrefix(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// suiteConfig: sub-second TTLs work (liveness is judged by the exact expiry
// stored in each item, not by memcached's whole-second exptime), but each
// refresh is two round trips through goroutines, so the short TTL is 300ms
// rather than the default 150ms to leave the watchdog room on a loaded
// two-core machine running the race detector.
var suiteConfig = dlocktest.Config{ShortTTL: 300 * time.Millisecond}

func TestConformance(t *testing.T) {
	srv := testserver.Memcached(t)
	dlocktest.RunConfig(t, suiteConfig, func(t *testing.T) dlock.Backend {
		return newBackend(t, []string{srv.Addr})
	})
}

// With two servers every key lives on one of them; the suite must pass the
// same way, List and Stats walking both.
func TestConformanceTwoServers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole suite a second time")
	}
	a, b := testserver.Memcached(t), testserver.Memcached(t)
	dlocktest.RunConfig(t, suiteConfig, func(t *testing.T) dlock.Backend {
		return newBackend(t, []string{a.Addr, b.Addr})
	})
}
