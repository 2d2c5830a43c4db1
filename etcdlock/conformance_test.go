package etcdlock_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/testserver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// newClient returns an etcd client on srv, closed when t ends.
func newClient(t testing.TB, srv *testserver.Etcd) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.Endpoint()},
		DialTimeout: 5 * time.Second,
		Logger:      quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// uniquePrefix returns a key prefix no other test uses, so that tests
// sharing one etcd see private namespaces.
func uniquePrefix(t testing.TB) string {
	t.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "t" + hex.EncodeToString(b[:]) + "/"
}

// newBackend returns a backend on cli with a prefix of its own, closed when
// t ends.
func newBackend(t testing.TB, cli *clientv3.Client, opts ...etcdlock.Option) *etcdlock.Backend {
	t.Helper()
	b, err := etcdlock.New(cli, append([]etcdlock.Option{etcdlock.WithPrefix(uniquePrefix(t))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// suiteConfig: etcd leases count whole seconds and the test server's
// shortest lease is 1s, so expiry is tested with a 1s TTL.
var suiteConfig = dlocktest.Config{ShortTTL: time.Second, FIFO: true}

func TestConformance(t *testing.T) {
	srv := testserver.StartEtcd(t)
	cli := newClient(t, srv)
	dlocktest.RunConfig(t, suiteConfig, func(t *testing.T) dlock.Backend {
		return newBackend(t, cli)
	})
}
