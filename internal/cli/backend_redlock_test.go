package cli

import (
	"strings"
	"testing"

	"github.com/dlock-dev/dlock/internal/testserver"
)

// The CLI over three real masters with redis+redlock://: a user's flow;
// one master down changes nothing; two down give exit 69 in one line.
func TestRedlockBackend(t *testing.T) {
	var servers []*testserver.Redis
	var addrs []string
	for range 3 {
		srv := testserver.StartRedis(t)
		servers = append(servers, srv)
		addrs = append(addrs, srv.Addr)
	}
	s := &store{t: t, url: "redis+redlock://" + strings.Join(addrs, ",") + "?timeout=2s"}
	s.userFlow()
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	_, stderr := s.mustDlock(ExitConflict, "run", "job", "--", "true")
	oneLineContaining(t, stderr, `"job" is locked by lock `)
	if out, _ := s.mustDlock(0, "stats", "--json"); !strings.Contains(out, `"active_locks": 1`) {
		t.Errorf("stats with one lock held:\n%s", out)
	}

	servers[0].Stop()
	if out, _ := s.mustDlock(0, "status", "job"); !strings.Contains(out, "locked:    yes") {
		t.Errorf("status with one master of three down:\n%s", out)
	}
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))
	s.assertFree("job")

	servers[1].Stop()
	_, stderr = s.mustDlock(ExitUnavailable, "run", "job", "--", "true")
	oneLineContaining(t, stderr, "store unavailable")

	for _, bad := range []string{
		"redis+redlock://127.0.0.1",                    // no port
		"redis+redlock://" + addrs[2] + "?replicas=1",  // not a Redlock parameter
		"redis+redlock://" + addrs[2] + "?fifo=maybe",  // not a boolean
		"redis+redlock://" + addrs[2] + "/x",           // database not a number
		"redis+redlock://" + addrs[2] + "?timeout=0",   // not positive
		"redis+redlock://" + addrs[2] + "," + addrs[2], // one master twice
	} {
		if code, _, stderr := runMain(t, "--backend", bad, "status", "job"); code != ExitUsage {
			t.Errorf("--backend %s: exit %d, %q; want %d", bad, code, stderr, ExitUsage)
		}
	}
}

// The user's flow over three masters with ?fifo=1.
func TestRedlockFIFOBackend(t *testing.T) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, testserver.StartRedis(t).Addr)
	}
	s := &store{t: t, url: "redis+redlock://" + strings.Join(addrs, ",") + "?fifo=1&timeout=2s"}
	s.userFlow()
}
