package pglock_test

import (
	"bufio"
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/pglock"
)

// The cross-process tests re-execute this test binary as children in a
// role (internal/proctest), each with its own pool and Backend on one
// server; TestMain runs the role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DSN"))
	if err != nil {
		return err
	}
	defer pool.Close()
	b, err := pglock.New(pool, pglock.WithTable(os.Getenv("TABLE")))
	if err != nil {
		return err
	}
	defer b.Close()
	return proctest.Serve(ctx, b, role, stdin)
}

// TestProcessesContending runs 8 processes that take one key 20 times each
// through a real PostgreSQL and write through a fenced resource: no two
// are ever inside together, no write is refused, and the fences grow with
// every grant.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	dsn := startPostgres(t)
	proctest.RunContention(t, 8, 20, "DSN="+dsn, "TABLE="+uniqueTable(), "KEY=shared", "TTL=1m")
}

// TestKilledHolderFreedAtTTL: a holder killed with SIGKILL refreshes no
// more, so its lease ends at its TTL: a waiter in another process gets the
// key then, not before, with a higher fence.
func TestKilledHolderFreedAtTTL(t *testing.T) {
	dsn := startPostgres(t)
	table := uniqueTable()
	b := newBackend(t, newPool(t, dsn), pglock.WithTable(table))
	proctest.CheckKilledHolder(t, dlock.New(b, dlock.WithTTL(time.Minute)), "k", time.Second, "DSN="+dsn, "TABLE="+table)
}
