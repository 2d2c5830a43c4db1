package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/pglock"
)

func init() {
	backends["postgresql"] = backendScheme{open: openPostgres} // described under postgres
	backends["postgres"] = backendScheme{
		open: openPostgres,
		forms: []string{
			"postgres://[user:pass@]host:port/db   PostgreSQL backend (postgresql:// too): leases in a",
			"                         table, fences from a sequence; libpq parameters such as sslmode=",
			"                         ?table=T (default dlock_locks)  ?timeout=D per operation (default 5s)",
		},
	}
}

// postgresBackend is the CLI's PostgreSQL backend: it owns its pool and
// closes it with the backend.
type postgresBackend struct {
	*pglock.Backend
	pool *pgxpool.Pool
}

func (b postgresBackend) Close() error {
	err := b.Backend.Close()
	b.pool.Close()
	return err
}

// openPostgres opens postgres:// and postgresql:// URLs: pgx reads the
// connection parameters (libpq's, such as sslmode, sslrootcert or
// application_name), dlock its own (table, timeout), which it takes out
// first. It does not connect: an unreachable server shows on the first
// operation as "store unavailable".
func openPostgres(_ context.Context, u *url.URL) (dlock.Backend, error) {
	if u.Opaque != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: use %s://[user:pass@]host:port/database", errBadURL, u.Scheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	var opts []pglock.Option
	if vals, ok := q["table"]; ok {
		opts = append(opts, pglock.WithTable(vals[len(vals)-1]))
		q.Del("table")
	}
	if vals, ok := q["timeout"]; ok {
		d, err := time.ParseDuration(vals[len(vals)-1])
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%w: timeout %q is not a positive duration such as 2s", errBadURL, vals[len(vals)-1])
		}
		opts = append(opts, pglock.WithTimeout(d))
		q.Del("timeout")
	}
	rest := *u
	rest.RawQuery = q.Encode()
	cfg, err := pgxpool.ParseConfig(rest.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	b, err := pglock.New(pool, opts...)
	if err != nil {
		pool.Close()
		if errors.Is(err, dlock.ErrInvalidOption) {
			return nil, fmt.Errorf("%w: %v", errBadURL, err)
		}
		return nil, err
	}
	return postgresBackend{Backend: b, pool: pool}, nil
}
