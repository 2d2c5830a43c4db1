package redislock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
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
	calls := make(map[string]int)
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "calls="); ok {
				calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.Atoi(v)
			}
		}
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

// denials wraps a backend and reports when a waiter waits, so a test
// knows without sleeping, and counts its looks: the core subscribes after
// the first refusal; a subscription with no wake-up pending is reported
// (the waiter now waits), and so is each refusal after it (with a wake-up
// pending, the waiter looks again at once). The embedded *Backend keeps
// the Notifier visible to the core.
type denials struct {
	*redislock.Backend
	denied chan string // lock id of the refused request

	mu         sync.Mutex
	subscribed map[string]bool // lock ids of waits that subscribed
}

func watchDenials(b *redislock.Backend) *denials {
	return &denials{Backend: b, denied: make(chan string, 1024), subscribed: map[string]bool{}}
}

func (d *denials) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	ch, cancel, err := d.Backend.Subscribe(ctx, key)
	if id, ok := dlock.WaitingLockID(ctx); ok && err == nil {
		d.mu.Lock()
		d.subscribed[id] = true
		d.mu.Unlock()
		if len(ch) == 0 {
			d.report(id)
		}
	}
	return ch, cancel, err
}

func (d *denials) report(id string) {
	select {
	case d.denied <- id:
	default:
	}
}

func (d *denials) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := d.Backend.Acquire(ctx, req)
	d.mu.Lock()
	waiting := d.subscribed[req.LockID]
	d.mu.Unlock()
	if err == nil && !granted && waiting {
		d.report(req.LockID)
	}
	return rec, granted, err
}

// startRedis starts a server for one test.
func startRedis(t testing.TB, extra ...string) *testserver.Redis {
	t.Helper()
	return testserver.StartRedis(t, extra...)
}
