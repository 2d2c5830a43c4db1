package redlock_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/redlock"
)

// masters starts n redis-servers for one test (with extra flags) and
// returns them with a client on each (short timeouts, as the package doc
// advises), closed when t ends.
func masters(t testing.TB, n int, extra ...string) ([]*testserver.Redis, []redis.UniversalClient) {
	t.Helper()
	servers := make([]*testserver.Redis, n)
	clients := make([]redis.UniversalClient, n)
	for i := range n {
		servers[i] = testserver.StartRedis(t, extra...)
		c := redis.NewClient(&redis.Options{
			Addr: servers[i].Addr, ContextTimeoutEnabled: true,
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
			MaxRetries: -1, DialerRetries: 1,
		})
		t.Cleanup(func() { _ = c.Close() })
		clients[i] = c
	}
	return servers, clients
}

// uniquePrefix returns a key prefix no other test uses.
func uniquePrefix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + ":"
}

// newBackend returns a backend on clients with a prefix of its own (and
// opts), closed when t ends.
func newBackend(t testing.TB, clients []redis.UniversalClient, prefix string, opts ...redlock.Option) *redlock.Backend {
	t.Helper()
	b, err := redlock.New(clients, append([]redlock.Option{redlock.WithPrefix(prefix)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// hang stops srv (SIGSTOP) until t ends: it keeps its connections and
// answers nothing.
func hang(t testing.TB, srv *testserver.Redis) {
	t.Helper()
	if err := srv.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Signal(syscall.SIGCONT) })
}

// busyClient returns a client of addr with a pool of one connection,
// closed when t ends, and occupy, which holds that connection with a
// blocking pop until the returned free is called; watch, another client
// of the same server, sees when the pop blocks.
func busyClient(t *testing.T, addr string, watch redis.UniversalClient) (busy *redis.Client, occupy func() (free func())) {
	t.Helper()
	busy = redis.NewClient(&redis.Options{
		Addr: addr, ContextTimeoutEnabled: true, PoolSize: 1,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: -1, DialerRetries: 1,
	})
	t.Cleanup(func() { _ = busy.Close() })
	list := uniquePrefix() + "block"
	occupy = func() func() {
		ctx := context.WithoutCancel(t.Context())
		popped := make(chan error, 1)
		go func() { popped <- busy.BLPop(ctx, 0, list).Err() }()
		waitfor.Until(t, "the blocking pop holds the connection", func() bool {
			info, err := watch.Info(ctx, "clients").Result()
			return err == nil && strings.Contains(info, "blocked_clients:1")
		})
		return func() {
			if err := watch.LPush(ctx, list, "go").Err(); err != nil {
				t.Fatal(err)
			}
			if err := <-popped; err != nil {
				t.Fatal(err)
			}
		}
	}
	return busy, occupy
}

// TestConformance runs the whole suite on three real masters.
func TestConformance(t *testing.T) {
	_, clients := masters(t, 3)
	dlocktest.Run(t, func(t *testing.T) dlock.Backend {
		return newBackend(t, clients, uniquePrefix())
	})
}

// TestConformanceFIFO runs the whole suite, FIFO order among waiters
// included, on three real masters with FIFO on.
func TestConformanceFIFO(t *testing.T) {
	_, clients := masters(t, 3)
	dlocktest.RunConfig(t, dlocktest.Config{FIFO: true}, func(t *testing.T) dlock.Backend {
		return newBackend(t, clients, uniquePrefix(), redlock.WithFIFO(true))
	})
}

func TestNewRejectsBadMasters(t *testing.T) {
	servers, clients := masters(t, 1)
	sameServer := redis.NewClient(&redis.Options{Addr: servers[0].Addr})
	t.Cleanup(func() { _ = sameServer.Close() })
	for name, cs := range map[string][]redis.UniversalClient{
		"none":             nil,
		"nil":              {clients[0], nil},
		"twice":            {clients[0], clients[0]},
		"one server twice": {clients[0], sameServer},
	} {
		if _, err := redlock.New(cs); !errorsIs(err, dlock.ErrInvalidOption) {
			t.Errorf("New with %s: %v, want ErrInvalidOption", name, err)
		}
	}
}
