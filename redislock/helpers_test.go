package redislock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/bench"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/redislock"
)

// newClient returns a go-redis client on addr with default options (so
// ContextTimeoutEnabled is off: the backend must honour deadlines itself),
// closed when t ends.
func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newDirectClient is newClient with ContextTimeoutEnabled, as the docs
// recommend: go-redis then ends calls at their deadline itself and the
// backend makes them on the caller's goroutine.
func newDirectClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newBackend returns a backend on rdb, closed when t ends.
func newBackend(t testing.TB, rdb redis.UniversalClient, opts ...redislock.Option) *redislock.Backend {
	t.Helper()
	b, err := redislock.New(rdb, opts...)
	if err != nil {
		t.Fatalf("redislock.New: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// uniquePrefix returns a key prefix no other test uses, so tests sharing a
// server see empty namespaces.
func uniquePrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + ":"
}

func uniqueKey(t testing.TB, name string) string {
	return t.Name() + "/" + name + "-" + uniquePrefix()
}

// commandCalls returns how many times the server ran each command, from
// INFO commandstats.
func commandCalls(t testing.TB, rdb *redis.Client) map[string]int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	stats, err := bench.ParseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	calls := make(map[string]int, len(stats))
	for name, st := range stats {
		calls[name] = int(st.Calls)
	}
	return calls
}

// scriptCalls counts script invocations (EVALSHA, and EVAL after a cache
// miss).
func scriptCalls(calls map[string]int) int { return calls["evalsha"] + calls["eval"] }

// pubsubConns counts the server's connections that hold subscriptions.
func pubsubConns(t testing.TB, rdb *redis.Client) int {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	n := 0
	for line := range strings.SplitSeq(list, "\n") {
		for field := range strings.SplitSeq(line, " ") {
			if v, ok := strings.CutPrefix(field, "sub="); ok && v != "0" {
				n++
			}
		}
	}
	return n
}

// denials is a backend that reports when a waiter waits and counts its
// looks (see dlocktest.WatchWaits), so a test knows without sleeping. It is
// a Notifier, so waiters are woken as without it.
type denials struct {
	dlock.Backend
	dlock.Notifier
	denied <-chan string // lock id of each report
}

func watchDenials(b *redislock.Backend) *denials {
	w, denied := dlocktest.WatchWaits(b, 1024)
	return &denials{Backend: w, Notifier: w.(dlock.Notifier), denied: denied}
}

// startRedis starts a server for one test.
func startRedis(t testing.TB, extra ...string) *testserver.Redis {
	t.Helper()
	return testserver.StartRedis(t, extra...)
}
