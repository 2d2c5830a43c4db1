package cli

import (
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/testserver"
)

// The CLI over a real Sentinel: redis+sentinel://sentinel/master finds the
// master through it; acquire, status, release as a user would type them.
func TestRedisSentinelBackend(t *testing.T) {
	srv := testserver.StartRedisSentinel(t)
	s := &store{t: t, url: "redis+sentinel://" + strings.Join(srv.SentinelAddrs, ",") + "/" + srv.MasterName}
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	token = strings.TrimSpace(token)
	if out, _ := s.mustDlock(0, "status", "job"); !strings.Contains(out, "locked:    yes") {
		t.Errorf("status of a held key:\n%s", out)
	}
	s.mustDlock(0, "release", "job", token)
	s.assertFree("job")
}

// The CLI over TLS: rediss:// verifies the server's certificate, so a
// self-signed one is refused with the store-unavailable code and a clear
// message, and accepted with go-redis's skip_verify option.
func TestRedisTLSBackend(t *testing.T) {
	srv := testserver.StartRedisTLS(t)
	refused := &store{t: t, url: "rediss://" + srv.Addr}
	_, stderr := refused.mustDlock(ExitUnavailable, "status", "job")
	if !strings.Contains(stderr, "certificate") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("status against an untrusted certificate: want one line naming the certificate, got:\n%s", stderr)
	}
	s := &store{t: t, url: "rediss://" + srv.Addr + "?skip_verify=true"}
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	if out, _ := s.mustDlock(0, "status", "job"); !strings.Contains(out, "locked:    yes") {
		t.Errorf("status of a held key:\n%s", out)
	}
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))
	s.assertFree("job")
}
