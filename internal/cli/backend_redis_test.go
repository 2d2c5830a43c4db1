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
