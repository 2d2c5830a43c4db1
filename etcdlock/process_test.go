package etcdlock_test

import (
	"bufio"
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// The cross-process tests re-execute this test binary as children in a
// role (internal/proctest), each with its own etcd client and Backend on
// one etcd; TestMain runs the role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{os.Getenv("ENDPOINT")},
		DialTimeout: 5 * time.Second,
		Logger:      quietLogger(),
	})
	if err != nil {
		return err
	}
	defer cli.Close()
	b, err := etcdlock.New(cli, etcdlock.WithPrefix(os.Getenv("PREFIX")))
	if err != nil {
		return err
	}
	defer b.Close()
	return proctest.Serve(ctx, b, role, stdin)
}

// TestProcessesContending runs 8 processes that take one key 10 times each
// through a real etcd and write through a fenced resource: no two are ever
// inside together, no write is refused, and the fences (the lock keys'
// create revisions) grow with every grant.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	srv := testserver.StartEtcd(t)
	proctest.RunContention(t, 8, 10, "ENDPOINT="+srv.Endpoint(), "PREFIX="+uniquePrefix(t), "KEY=shared", "TTL=1m")
}

// TestKilledHolderFreedAtTTL: the lease of a holder killed with SIGKILL is
// no longer kept alive, so etcd deletes its lock key at the TTL: a waiter
// in another process gets the key then, not before, with a higher fence.
func TestKilledHolderFreedAtTTL(t *testing.T) {
	srv := testserver.StartEtcd(t)
	prefix := uniquePrefix(t)
	b, err := etcdlock.New(newClient(t, srv), etcdlock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	proctest.CheckKilledHolder(t, dlock.New(b, dlock.WithTTL(time.Minute)), "k", time.Second, "ENDPOINT="+srv.Endpoint(), "PREFIX="+prefix)
}
