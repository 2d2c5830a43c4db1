package cli

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

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

// The CLI with ?replicas=1: a grant that the replica acknowledged works as
// usual; once the replica has stopped replicating, acquire exits 69 with
// one line saying why, and leaves the key free.
func TestRedisReplicasBackend(t *testing.T) {
	master, replica := testserver.StartRedisReplicated(t)
	s := &store{t: t, url: "redis://" + master.Addr + "?replicas=1"}
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))

	rdb := redis.NewClient(&redis.Options{Addr: replica.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Do(t.Context(), "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatalf("REPLICAOF NO ONE: %v", err)
	}
	_, stderr := s.mustDlock(ExitUnavailable, "acquire", "--ttl", "1m", "-q", "job")
	oneLineContaining(t, stderr, "acknowledged by 0 of 1 replicas")
	s.assertFree("job")

	cluster := &store{t: t, url: "redis+cluster://" + master.Addr + "?replicas=1"}
	_, stderr = cluster.mustDlock(ExitUsage, "status", "job")
	oneLineContaining(t, stderr, "WithReplicas needs a *redis.Client")
}

// A waiting acquire whose store goes away keeps waiting, and exits 69
// (not 75) if the store is still gone when its wait ends: the outage is
// what to act on. Its line names both the wait and the store's error.
func TestRedisOutageEndsWaitUnavailable(t *testing.T) {
	srv := testserver.StartRedis(t)
	// Without go-redis's retries an attempt fails at once, so that the wait
	// ends between failed attempts, not during the first one (which would
	// be a look cut short by the wait's end, exit 75).
	s := &store{t: t, url: "redis://" + srv.Addr + "?fifo=1&dial_timeout=100ms&max_retries=-1"}
	s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	type result struct {
		code   int
		errOut string
	}
	got := make(chan result, 1)
	go func() {
		code, _, errOut := s.dlock("acquire", "--ttl", "1m", "--wait", "5s", "--timeout", "1s", "job")
		got <- result{code, errOut}
	}()
	s.awaitWaiting("job", 1) // queued: the store answered, the wait began
	srv.Stop()
	r := <-got
	if r.code != ExitUnavailable {
		t.Fatalf("wait that ended with the store down: exit %d, want %d\n%s", r.code, ExitUnavailable, r.errOut)
	}
	oneLineContaining(t, r.errOut, "connection refused")
	oneLineContaining(t, r.errOut, "deadline exceeded")
}
