package memcachelock_test

import (
	"bufio"
	"context"
	"os"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/memcachelock"
)

// The cross-process tests re-execute this test binary as children in a
// role (internal/proctest) that share one memcached; TestMain runs the
// role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	ctx := context.Background()
	// A generous network timeout: eight children, memcached and the race
	// detector share two cores.
	b, err := memcachelock.New([]string{os.Getenv("ADDR")}, memcachelock.WithPrefix(os.Getenv("PREFIX")),
		memcachelock.WithTimeout(10*time.Second))
	if err != nil {
		return err
	}
	return proctest.Serve(ctx, b, role, stdin)
}

// Processes contending for one key through memcached never overlap, and
// every grant's fence is above the one before.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	srv := testserver.Memcached(t)
	proctest.RunContention(t, 8, 15, "ADDR="+srv.Addr, "PREFIX="+uniquePrefix(t), "KEY="+uniqueKey(t), "TTL=1m")
}

// A holder killed with SIGKILL leaves its lease in memcached: another
// process gets the key after the TTL, with a higher fence, and not before.
func TestKilledHolderFreedAtTTL(t *testing.T) {
	srv := testserver.Memcached(t)
	prefix := uniquePrefix(t)
	b, err := memcachelock.New([]string{srv.Addr}, memcachelock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	proctest.CheckKilledHolder(t, dlock.New(b), uniqueKey(t), time.Second, "ADDR="+srv.Addr, "PREFIX="+prefix)
}
