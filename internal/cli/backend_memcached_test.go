package cli

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/testserver"
)

func TestMemcachedURLs(t *testing.T) {
	for _, raw := range []string{
		"memcached://127.0.0.1:11211",
		"memcached://localhost",
		"memcached://127.0.0.1:1,127.0.0.1:2/",
		"memcached://127.0.0.1?server=[::1]:11211&prefix=app:&timeout=250ms",
		"MEMCACHED://127.0.0.1",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openMemcached(t.Context(), u); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	for raw, want := range map[string]string{
		"memcached://":                "no server",
		"memcached://u:pw@h":          "no user or password",
		"memcached://h/path":          "no path",
		"memcached://h?ttl=1s":        `unknown parameter "ttl"`,
		"memcached://h?timeout=soon":  "timeout",
		"memcached://h?timeout=-1s":   "timeout",
		"memcached://h?prefix=a%20b":  "prefix",
		"memcached://h1,,h2":          "empty server",
		"memcached://h?server=:11211": "needs a host",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = openMemcached(t.Context(), u)
		if !errors.Is(err, errBadURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a bad URL error mentioning %q", raw, err, want)
		}
	}
}

// The CLI over a real memcached: acquire, status, list, a contended run,
// release, as a user would type them.
func TestMemcachedBackend(t *testing.T) {
	srv := testserver.Memcached(t)
	s := &store{t: t, url: "memcached://" + srv.Addr + "?prefix=" + strings.ReplaceAll(t.Name(), "/", "_") + ":"}
	s.userFlow()
}
