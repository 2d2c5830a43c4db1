package cli

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/testserver"
)

func TestPostgresURLs(t *testing.T) {
	for _, raw := range []string{
		"postgres://app@db.internal/app",
		"postgresql://app:pw@127.0.0.1:5433/app?sslmode=disable",
		"postgres://h/db?table=locks&timeout=250ms&application_name=cron",
		"postgres://h/db?table=ops.locks",
		"POSTGRES://h/db",
		"postgres:///db?host=/var/run/postgresql",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := openPostgres(t.Context(), u)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		_ = b.(postgresBackend).Close()
	}
	for raw, want := range map[string]string{
		"postgres://h/db?table=Locks":         "table",
		"postgres://h/db?table=a%3Bdrop":      "table",
		"postgres://h/db?timeout=soon":        "timeout",
		"postgres://h/db?timeout=0s":          "timeout",
		"postgres://h/db?sslmode=sometimes":   "sslmode",
		"postgres://h:notaport/db":            "",
		"postgres://h/db#frag":                "postgres://",
		"postgres://h/db?connect_timeout=abc": "connect_timeout",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			if want == "" {
				continue // the URL parser refuses it before we see it
			}
			t.Fatal(err)
		}
		_, err = openPostgres(t.Context(), u)
		if !errors.Is(err, errBadURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a bad URL error mentioning %q", raw, err, want)
		}
	}
}

// The CLI over a real PostgreSQL: a user's flow, stats, a contended run
// that names the holder; the server stopped gives exit 69 in one line.
func TestPostgresBackend(t *testing.T) {
	srv := testserver.StartPostgres(t)
	s := &store{t: t, url: srv.DSN() + "&table=cli_test&timeout=2s"}
	s.userFlow()
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "--label", "nightly", "job")
	_, stderr := s.mustDlock(ExitConflict, "run", "job", "--", "true")
	oneLineContaining(t, stderr, `"job" is locked by lock `)
	if !strings.Contains(stderr, `"nightly"`) {
		t.Errorf("the conflict does not name the holder's label: %q", stderr)
	}
	if out, _ := s.mustDlock(0, "stats", "--json"); !strings.Contains(out, `"active_locks": 1`) {
		t.Errorf("stats with one lock held:\n%s", out)
	}
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))
	s.assertFree("job")

	srv.Stop()
	_, stderr = s.mustDlock(ExitUnavailable, "run", "job", "--", "true")
	oneLineContaining(t, stderr, "store unavailable")
}
