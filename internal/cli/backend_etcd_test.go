package cli

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/etcdurl"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// The test binary acts as dlock-etcd: it has the real etcd opener.
func init() { RegisterEtcd(etcdurl.Open) }

// dlock hands etcd URLs over to dlock-etcd: the one next to its own
// executable, else the one on $PATH, else an error that says how to get
// it.
func TestFindDlockEtcd(t *testing.T) {
	dir := t.TempDir()
	self := func() (string, error) { return filepath.Join(dir, "dlock"), nil }
	onPath := func(string) (string, error) { return "/usr/local/bin/dlock-etcd", nil }
	notOnPath := func(name string) (string, error) { return "", errors.New("not found") }

	if got, err := findDlockEtcd(self, onPath); err != nil || got != "/usr/local/bin/dlock-etcd" {
		t.Errorf("with dlock-etcd on $PATH only: %q, %v", got, err)
	}
	_, err := findDlockEtcd(self, notOnPath)
	if err == nil || !strings.Contains(err.Error(), "go install github.com/dlock-dev/dlock/cmd/dlock-etcd") {
		t.Errorf("with no dlock-etcd: %v, want an error saying how to install it", err)
	}
	sibling := filepath.Join(dir, "dlock-etcd")
	if err := os.WriteFile(sibling, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findDlockEtcd(self, onPath); err != nil || got != sibling {
		t.Errorf("with dlock-etcd next to dlock: %q, %v; want %q", got, err, sibling)
	}
}

// The CLI over a real etcd: acquire, status, list, a contended run,
// release, as a user would type them.
func TestEtcdBackend(t *testing.T) {
	srv := testserver.StartEtcd(t)
	s := &store{t: t, url: "etcd://" + srv.Addr + "?prefix=" + url.QueryEscape(t.Name()+"/")}
	s.userFlow()
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
