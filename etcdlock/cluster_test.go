package etcdlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// TestLeaderLossKeepsLease: on a three-member cluster, killing the leader
// loses no lock and no fence. The holder's lease survives the election (its
// refresh works through the members left, and another client is still
// refused), a waiter queued before the loss is granted the key after it,
// and that grant's fence is above the first holder's: the fence is sound
// across a failover, which a Redis failover cannot promise.
func TestLeaderLossKeepsLease(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member cluster")
	}
	cluster := testserver.StartEtcdCluster(t, 3)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: within, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	prefix := etcdlock.WithPrefix(uniquePrefix(t))
	holder := dlock.New(newBackend(t, cli, prefix))
	otherBackend := newBackend(t, cli, prefix)
	other := dlock.New(otherBackend)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	l, err := holder.TryAcquire(ctx, "job", dlock.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	waiter := queueUp(t, ctx, "job", 1, otherBackend)

	leader := cluster.Leader(t)
	leader.Stop()
	if now := cluster.Leader(t); now == leader {
		t.Fatal("the stopped member is still the leader")
	}

	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after the leader was lost: %v", err)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("the lock was lost with the leader: %v", err)
	}
	if _, err := other.TryAcquire(ctx, "job"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire by another client after the leader was lost: %v, want ErrNotAcquired", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second := next(t, waiter)
	if second.lock.Fence() <= l.Fence() {
		t.Errorf("fence after the failover %d, not above %d", second.lock.Fence(), l.Fence())
	}
	if err := second.lock.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
