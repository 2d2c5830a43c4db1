package cli

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/testserver"
)

func TestEtcdURLs(t *testing.T) {
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
		b, err := openEtcd(t.Context(), u)
		if err != nil {
			t.Errorf("%s: %v", raw, err)
			continue
		}
		_ = b.(etcdBackend).Close()
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
		_, err = openEtcd(t.Context(), u)
		if !errors.Is(err, errBadURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want a bad URL error mentioning %q", raw, err, want)
		}
	}
}

// With a user and password the etcd client authenticates when it is made:
// against no server that is "store unavailable" within the URL's timeout,
// not a usage error.
func TestEtcdURLWithUserUnreachable(t *testing.T) {
	u, err := url.Parse("etcd://user:pw@127.0.0.1:1?timeout=250ms")
	if err != nil {
		t.Fatal(err)
	}
	_, err = openEtcd(t.Context(), u)
	if err == nil || errors.Is(err, errBadURL) {
		t.Fatalf("open with credentials against no server: %v, want an error that is not a usage error", err)
	}
}

// The CLI over a real etcd: acquire, status, list, a contended run,
// release, as a user would type them.
func TestEtcdBackend(t *testing.T) {
	srv := testserver.StartEtcd(t)
	s := &store{t: t, url: "etcd://" + srv.Addr + "?prefix=" + url.QueryEscape(t.Name()+"/")}
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	token = strings.TrimSpace(token)
	out, _ := s.mustDlock(0, "status", "job")
	if !strings.Contains(out, "locked:    yes") {
		t.Errorf("status of a held key:\n%s", out)
	}
	if out, _ := s.mustDlock(0, "list"); !strings.Contains(out, "job") {
		t.Errorf("list:\n%s", out)
	}
	s.mustDlock(ExitConflict, "run", "job", "--", "true")
	s.mustDlock(0, "release", "job", token)
	s.mustDlock(0, "run", "job", "--", "true")
	s.assertFree("job")
	s.assertNoLocks()
}

// etcds:// trusts the CA given with ?cacert=; without it the self-signed
// certificate is refused and the command exits with the store-unavailable
// code, in one line, within the URL's timeout.
func TestEtcdTLSBackend(t *testing.T) {
	srv := testserver.StartEtcdTLS(t)
	refused := &store{t: t, url: "etcds://" + srv.Addr + "?timeout=1s"}
	_, stderr := refused.mustDlock(ExitUnavailable, "status", "job")
	oneLineContaining(t, stderr, "unavailable")
	s := &store{t: t, url: "etcds://" + srv.Addr + "?cacert=" + url.QueryEscape(srv.CAFile)}
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	if out, _ := s.mustDlock(0, "status", "job"); !strings.Contains(out, "locked:    yes") {
		t.Errorf("status of a held key:\n%s", out)
	}
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))
	s.assertFree("job")
}

// Real processes contending through etcd: `dlock stress` in queue mode
// (every run waits its turn in the queue) and in exclusive mode, each with
// its verdict on overlaps and fences.
func TestEtcdStress(t *testing.T) {
	srv := testserver.StartEtcd(t)
	s := &store{t: t, url: "etcd://" + srv.Addr + "?prefix=" + url.QueryEscape(t.Name()+"/")}
	code, sum, errOut := runStressIn(t, s, "-n", "12", "--mode", "queue", "--hold", "20ms", "--key", "queued")
	if code != 0 || !sum.Verdict.Clean || sum.Ran != 12 || sum.Overlaps != 0 {
		t.Fatalf("queue: exit %d, summary %+v\nstderr: %s", code, sum, errOut)
	}
	code, sum, errOut = runStressIn(t, s, "-n", "12", "--hold", "200ms", "--key", "exclusive")
	if code != 0 || !sum.Verdict.Clean || sum.Ran < 1 || sum.Ran+sum.Refused != 12 {
		t.Fatalf("exclusive: exit %d, summary %+v\nstderr: %s", code, sum, errOut)
	}
	s.assertNoLocks()
}
