package redislock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/redislock"
)

// Each conformance run starts its own server(s), so the runs go in
// parallel; within a run each subtest gets a private key prefix.

func TestConformance(t *testing.T) {
	t.Parallel()
	conform(t, newClient(t, startRedis(t).Addr))
}

// conform runs the suite over rdb, which it closes at the end of the test,
// with a private key prefix per subtest.
func conform(t *testing.T, rdb redis.UniversalClient) {
	t.Cleanup(func() { _ = rdb.Close() })
	dlocktest.Run(t, func(t *testing.T) dlock.Backend {
		return newBackend(t, rdb, redislock.WithPrefix(uniquePrefix()))
	})
}

// TestConformanceFIFO also uses the recommended client settings
// (ContextTimeoutEnabled), under which calls run on the caller's goroutine.
func TestConformanceFIFO(t *testing.T) {
	t.Parallel()
	rdb := newDirectClient(t, startRedis(t).Addr)
	dlocktest.RunConfig(t, dlocktest.Config{FIFO: true}, func(t *testing.T) dlock.Backend {
		return newBackend(t, rdb, redislock.WithPrefix(uniquePrefix()), redislock.WithFIFO(true))
	})
}

// TestConformanceNoPrefix runs the suite in compatibility mode: lock keys
// are the callers' keys. Each subtest gets a flushed database.
func TestConformanceNoPrefix(t *testing.T) {
	t.Parallel()
	addr := startRedis(t).Addr
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: 3})
	t.Cleanup(func() { _ = rdb.Close() })
	dlocktest.Run(t, func(t *testing.T) dlock.Backend {
		if err := rdb.FlushDB(context.Background()).Err(); err != nil {
			t.Fatalf("FLUSHDB: %v", err)
		}
		return newBackend(t, rdb, redislock.WithPrefix(""))
	})
}

// TestConformanceCluster runs the suite on a real three-master Redis
// Cluster: every script touches several keys, which must share a slot.
func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	cluster := testserver.StartRedisCluster(t, 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), ContextTimeoutEnabled: true})
	conform(t, rdb)
}

// TestConformanceSentinel runs the suite through a real Sentinel: the
// failover client asks it for the master and subscribes to its switch
// notices.
func TestConformanceSentinel(t *testing.T) {
	t.Parallel()
	s := testserver.StartRedisSentinel(t)
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs, ContextTimeoutEnabled: true,
	})
	conform(t, rdb)
}

// TestConformanceTLS runs the suite over TLS to a redis-server that speaks
// nothing else.
func TestConformanceTLS(t *testing.T) {
	t.Parallel()
	srv := testserver.StartRedisTLS(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: srv.Config, ContextTimeoutEnabled: true})
	conform(t, rdb)
}

// TestConformanceReplicas runs the suite on a master with a replica,
// every grant and refresh waiting for the replica (WithReplicas(1)).
// Short leases are a second rather than the suite's 150 ms: in CI with two
// busy loops beside it, refreshes that waited for the replica missed a
// 150 ms validity and the watched lease ran out in the store.
func TestConformanceReplicas(t *testing.T) {
	t.Parallel()
	master, _ := testserver.StartRedisReplicated(t)
	rdb := newDirectClient(t, master.Addr)
	dlocktest.RunConfig(t, dlocktest.Config{ShortTTL: time.Second}, func(t *testing.T) dlock.Backend {
		return newBackend(t, rdb, redislock.WithPrefix(uniquePrefix()), redislock.WithReplicas(1, 2*time.Second))
	})
}
