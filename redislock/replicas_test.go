package redislock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/redislock"
)

// TestReplicas: with WithReplicas(1), a grant and a refresh return only
// once the replica has them (its copy of the lock key holds the token when
// Acquire returns, and a WAIT followed each on the master); once the
// replica stops replicating, a grant that cannot reach it is refused with
// ErrUnavailable and given back, and a refresh fails the same way without
// losing the lock.
func TestReplicas(t *testing.T) {
	master, replica := testserver.StartRedisReplicated(t)
	rdb := newDirectClient(t, master.Addr)
	onReplica := newClient(t, replica.Addr)
	c := dlock.New(newBackend(t, rdb, redislock.WithReplicas(1, 2*time.Second)))
	ctx := t.Context()

	l, err := c.TryAcquire(ctx, "replicated", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("TryAcquire with a live replica: %v", err)
	}
	if v, err := onReplica.Get(ctx, redislock.DefaultPrefix+"replicated").Result(); err != nil || v != l.Token() {
		t.Errorf("the replica's lock key right after the grant = %q, %v; want the token", v, err)
	}
	if err := l.Refresh(ctx); err != nil { // the first loads the script: NOSCRIPT and a second WAIT
		t.Fatalf("Refresh with a live replica: %v", err)
	}
	before := commandCalls(t, rdb)["wait"]
	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("Refresh with a live replica: %v", err)
	}
	if n := commandCalls(t, rdb)["wait"] - before; n != 1 {
		t.Errorf("the master ran WAIT %d times for one refresh, want 1", n)
	}

	if err := onReplica.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatalf("REPLICAOF NO ONE: %v", err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Refresh that no replica acknowledged = %v, want ErrUnavailable", err)
	}
	if err := l.Err(); err != nil {
		t.Errorf("a refresh the replica missed lost the lock: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release, which needs no replica: %v", err)
	}

	_, err = c.TryAcquire(ctx, "unreplicated")
	if !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryAcquire that no replica acknowledged = %v, want ErrUnavailable", err)
	}
	// The core gave the grant back; the release may still be on its way.
	waitfor.Until(t, "the unreplicated grant to be given back", func() bool {
		n, err := rdb.Exists(ctx, redislock.DefaultPrefix+"unreplicated").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// TestReplicasNeedsOneConnection: WAIT must follow the write on its
// connection, which only a *redis.Client guarantees.
func TestReplicasNeedsOneConnection(t *testing.T) {
	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	t.Cleanup(func() { _ = cluster.Close() })
	if _, err := redislock.New(cluster, redislock.WithReplicas(1, time.Second)); !errors.Is(err, dlock.ErrInvalidOption) {
		t.Errorf("New(ClusterClient, WithReplicas(1)) = %v, want ErrInvalidOption", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	for _, opt := range []redislock.Option{redislock.WithReplicas(-1, time.Second), redislock.WithReplicas(1, 0)} {
		if _, err := redislock.New(rdb, opt); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("New with a bad WithReplicas = %v, want ErrInvalidOption", err)
		}
	}
	if _, err := redislock.New(rdb, redislock.WithReplicas(0, 0)); err != nil {
		t.Errorf("New(WithReplicas(0, 0)) = %v, want nil (no WAIT)", err)
	}
}
