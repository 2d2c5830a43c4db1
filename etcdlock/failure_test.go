package etcdlock_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/internal/waitfor"
)

// within bounds how long a failing call may take: generous, since the
// point is that it returns (no hang), not how fast.
const within = 5 * time.Second

// TestServerDown: every operation on a cluster that is gone fails with
// ErrUnavailable within the backend's timeout, or with the caller's
// context error when the caller's deadline is sooner; a held lock fires
// its lost signal when its validity passes without a refresh.
func TestServerDown(t *testing.T) {
	srv := testserver.StartEtcd(t)
	b := newBackend(t, newClient(t, srv), etcdlock.WithTimeout(300*time.Millisecond))
	dlocktest.CheckStoreDown(t, dlock.New(b), "down", srv.Stop, within)
}

// TestRestartKeepsLeases: etcd keeps keys, leases and its revision on disk,
// so a holder keeps its lock across a restart (its refresh works once the
// member is back) and the next grant's fence is still above every earlier
// one: the fence is sound.
func TestRestartKeepsLeases(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := dlock.New(newBackend(t, newClient(t, srv)))
	l, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)

	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if err := l.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after a restart: %v", err)
	}
	rec, found, err := c.Inspect(ctx, "job")
	if err != nil || !found || rec.LockID != l.LockID() || rec.Fence != l.Fence() {
		t.Fatalf("Inspect after a restart = %+v, %v, %v; want lock %s, fence %d", rec, found, err, l.LockID(), l.Fence())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := c.TryAcquire(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if next.Fence() <= l.Fence() {
		t.Errorf("fence after a restart %d, not above %d", next.Fence(), l.Fence())
	}
}

// TestDataLossLosesLock: a member started again without its data (a new
// cluster on the same address) has no lease: the holder's refresh says so
// and the lost signal fires. (Fences then start over: the package doc says
// so.)
func TestDataLossLosesLock(t *testing.T) {
	srv := testserver.StartEtcd(t)
	c := dlock.New(newBackend(t, newClient(t, srv)))
	l, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := os.RemoveAll(srv.DataDir); err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)

	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Refresh after the data was lost: %v, want ErrNotHeld", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done still open after the refresh found the lease gone")
	}
}

// TestAmbiguousAcquireCleanedUp: an acquire whose transaction reached etcd
// but whose answer did not reach the caller in time is reported as not
// acquired, and the key is freed long before the lease's minute: by the
// core's release of the token, and by the backend itself, which revokes
// the lease.
func TestAmbiguousAcquireCleanedUp(t *testing.T) {
	var swallow atomic.Bool
	cli := losingClient(t, testserver.StartEtcd(t), &swallow)
	b := newBackend(t, cli)
	c := dlock.New(b)

	swallow.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	l, err := c.TryAcquire(ctx, "job", dlock.WithTTL(time.Minute))
	cancel()
	if err == nil || l != nil {
		t.Fatalf("TryAcquire whose answer was lost = %v, %v; want an error", l, err)
	}
	swallow.Store(false)
	waitfor.Until(t, "the lost grant to be given back", func() bool {
		_, found, err := c.Inspect(t.Context(), "job")
		return err == nil && !found
	})
	if _, err := c.TryAcquire(t.Context(), "job"); err != nil {
		t.Errorf("TryAcquire after the cleanup: %v", err)
	}

	// The backend cleans up by itself, without the core's release.
	swallow.Store(true)
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, granted, err := b.Acquire(ctx, dlock.AcquireRequest{Key: "alone", Token: "0123456789abcdef0123456789abcdef", LockID: "0123456789abcdef", TTL: time.Minute})
	cancel()
	swallow.Store(false)
	if err == nil || granted {
		t.Fatalf("Backend.Acquire whose answer was lost = %v, %v; want an error", granted, err)
	}
	waitfor.Until(t, "the backend to give the lost grant back", func() bool {
		_, found, err := c.Inspect(t.Context(), "alone")
		return err == nil && !found
	})
}

// TestAmbiguousJoinDequeued: a waiter whose ticket was put but whose
// answer was lost gives up with an error, and its ticket leaves the queue
// (the session lease that would end it lives as long as the backend).
func TestAmbiguousJoinDequeued(t *testing.T) {
	var swallow atomic.Bool
	cli := losingClient(t, testserver.StartEtcd(t), &swallow)
	b := newBackend(t, cli)
	c := dlock.New(b)
	if _, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	swallow.Store(true)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := c.Acquire(ctx, "job")
	cancel()
	swallow.Store(false)
	if err == nil {
		t.Fatal("Acquire whose join was lost succeeded")
	}
	waitfor.Until(t, "the lost join's ticket to leave the queue", func() bool {
		return queueLen(t, cli, b, "job") == 0
	})
}

// losingClient returns a client on srv that, while swallow is set, loses
// the answer of every transaction that puts (a grant, or a waiter's join):
// the transaction runs on the server, and the caller sees its context end.
func losingClient(t *testing.T, srv *testserver.Etcd, swallow *atomic.Bool) *clientv3.Client {
	t.Helper()
	lose := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && swallow.Load() && puts(txn.Success) {
			<-ctx.Done()
			return ctx.Err()
		}
		return err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.Endpoint()},
		DialTimeout: within,
		Logger:      quietLogger(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(lose)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func puts(ops []*etcdserverpb.RequestOp) bool {
	for _, op := range ops {
		if op.GetRequestPut() != nil {
			return true
		}
	}
	return false
}

// TestCorruptValue: a key under the prefix that this package did not write
// is reported as corrupt, and left as it was.
func TestCorruptValue(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := newClient(t, srv)
	b, err := etcdlock.New(cli, etcdlock.WithPrefix("corrupt/"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(t.Context(), b.LockKey("job"), "not a lock"); err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b)
	if _, err := c.TryAcquire(t.Context(), "job"); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("TryAcquire of a foreign key: %v, want ErrCorrupt", err)
	}
	if _, _, err := c.Inspect(t.Context(), "job"); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("Inspect of a foreign key: %v, want ErrCorrupt", err)
	}
	resp, err := cli.Get(t.Context(), b.LockKey("job"))
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "not a lock" {
		t.Errorf("foreign key after the attempts: %v, %v", resp, err)
	}
	// A free key whose queue holds something that is not a ticket.
	if _, err := cli.Put(t.Context(), b.QueuePrefix("queued")+"x", "not a ticket"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(t.Context(), "queued"); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("TryAcquire of a key with a foreign ticket: %v, want ErrCorrupt", err)
	}
}

// TestRefreshNewTTLMovesLease: a refresh with another TTL (as WithMinHold's
// keep makes) moves the key to a new lease of that length and keeps the
// fence; the old lease is revoked.
func TestRefreshNewTTLMovesLease(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := newClient(t, srv)
	b := newBackend(t, cli)
	c := dlock.New(b)
	l, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	before := leaseOf(t, cli, b, "job")
	rec, err := b.Refresh(t.Context(), "job", l.Token(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Fence != l.Fence() || rec.LockID != l.LockID() {
		t.Errorf("record after the move = %+v, want fence %d, lock %s", rec, l.Fence(), l.LockID())
	}
	after := leaseOf(t, cli, b, "job")
	if after == before {
		t.Fatal("the key is on the same lease after a refresh with another TTL")
	}
	ttl, err := cli.TimeToLive(t.Context(), after)
	if err != nil || ttl.GrantedTTL != 5 {
		t.Errorf("new lease: %+v, %v; want a granted TTL of 5s", ttl, err)
	}
	waitfor.Until(t, "the old lease to be revoked", func() bool {
		ttl, err := cli.TimeToLive(t.Context(), before)
		return err == nil && ttl.TTL == -1
	})
	// The same TTL again is a keep-alive: the lease stays.
	if _, err := b.Refresh(t.Context(), "job", l.Token(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := leaseOf(t, cli, b, "job"); got != after {
		t.Errorf("a refresh with the same TTL moved the key to lease %x", got)
	}
}

// leaseOf returns the etcd lease key is attached to.
func leaseOf(t *testing.T, cli *clientv3.Client, b *etcdlock.Backend, key string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(t.Context(), b.LockKey(key))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %q: %v, %v", key, resp, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}
