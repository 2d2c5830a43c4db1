package pglock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/pglock"
)

// startPostgres starts a PostgreSQL server for t and returns its DSN.
func startPostgres(t testing.TB) string {
	t.Helper()
	return testserver.StartPostgres(t).DSN()
}

// newPool returns a pool on dsn, closed when t ends.
func newPool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// uniqueTable returns a table name no other test uses, so that tests
// sharing one server see private namespaces.
func uniqueTable() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:])
}

// newBackend returns a backend on pool with a table of its own (unless
// opts name one), closed when t ends.
func newBackend(t testing.TB, pool *pgxpool.Pool, opts ...pglock.Option) *pglock.Backend {
	t.Helper()
	b, err := pglock.New(pool, append([]pglock.Option{pglock.WithTable(uniqueTable())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
