package etcdurl

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock/internal/backendurl"
)

func TestURLs(t *testing.T) {
	for _, raw := range []string{
		"etcd://127.0.0.1:2379",
		"etcd://localhost",
		"etcd://127.0.0.1:1,127.0.0.1:2/",
		"etcd://127.0.0.1?prefix=app/&timeout=250ms",
		"ETCD://127.0.0.1",
		"etcds://127.0.0.1",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(t.Context(), u)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		_ = b.(backend).Close()
	}
	for raw, want := range map[string]string{
		"etcd://":                         "no endpoint",
		"etcd://h/path":                   "no path",
		"etcd://h?ttl=1s":                 `unknown parameter "ttl"`,
		"etcd://h?timeout=soon":           "timeout",
		"etcd://h?timeout=0s":             "timeout",
		"etcd://h?prefix=":                "empty prefix",
		"etcd://h1,,h2":                   "empty server",
		"etcd://h?cacert=ca.pem":          "for etcds://",
		"etcds://h?cacert=/nonexistent":   "cacert",
		"etcds://h?cert=/c.pem":           "cert and key go together",
		"etcds://h?cert=/c.pem&key=/k.pm": "client certificate",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(t.Context(), u)
		if !errors.Is(err, backendurl.ErrBad) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a bad URL error mentioning %q", raw, err, want)
		}
	}
}

// With a user and password the etcd client authenticates when it is made:
// against no server that is "store unavailable" within the URL's timeout,
// not a usage error.
func TestUserUnreachable(t *testing.T) {
	u, err := url.Parse("etcd://user:pw@127.0.0.1:1?timeout=250ms")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(t.Context(), u)
	if err == nil || errors.Is(err, backendurl.ErrBad) {
		t.Fatalf("open with credentials against no server: %v, want an error that is not a usage error", err)
	}
}

// Without ?timeout=, the command's --timeout (passed in the context)
// bounds each operation, and the authentication when the client is made.
func TestCommandTimeout(t *testing.T) {
	u, err := url.Parse("etcd://user:pw@127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(backendurl.WithTimeout(t.Context(), 250*time.Millisecond), u)
	if err == nil || !strings.Contains(err.Error(), "no answer from etcd within 250ms") {
		t.Fatalf("open with --timeout 250ms against no server: %v, want it to say it waited 250ms", err)
	}
}
