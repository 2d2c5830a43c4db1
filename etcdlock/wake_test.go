package etcdlock_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// requests returns how many requests of each gRPC method the member has
// handled, from its /metrics.
func requests(t *testing.T, srv *testserver.Etcd) map[string]float64 {
	t.Helper()
	resp, err := http.Get(srv.Endpoint() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	counts := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_handled_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `grpc_method="`)
		method, _, _ := strings.Cut(rest, `"`)
		fields := strings.Fields(line)
		n, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		counts[method] += n
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// lookups are the requests a waiter that polled would make.
var lookups = []string{"Range", "Txn", "LeaseGrant", "LeaseTimeToLive"}

func sum(counts map[string]float64, methods []string) float64 {
	var n float64
	for _, m := range methods {
		n += counts[m]
	}
	return n
}

// TestWakeUpWithoutPolling: 32 waiters on a held key make no request while
// it is held (each watches the key from the revision of its refusal), and
// a release hands the key on to one of them.
func TestWakeUpWithoutPolling(t *testing.T) {
	const waiters = 32
	srv := testserver.StartEtcd(t)
	b := newBackend(t, newClient(t, srv))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	holder, err := dlock.New(b).TryAcquire(ctx, "job", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	grants := dlocktest.StartWaiters(ctx, t, b, "job", waiters, time.Minute)

	// A polling waiter with the default backoff (at most 100ms) would
	// make 32*3 attempts in this time.
	before := requests(t, srv)
	time.Sleep(300 * time.Millisecond)
	during := requests(t, srv)
	if n := sum(during, lookups) - sum(before, lookups); n != 0 {
		t.Errorf("%v requests while the key was held and nothing changed, want 0", n)
	}

	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	first := <-grants
	if first == nil {
		t.Fatal("the first grant after the release failed")
	}
	after := requests(t, srv)
	t.Logf("requests from the release to the next grant: %v (%d waiters)", sum(after, lookups)-sum(during, lookups), waiters)
	if err := first.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for range waiters - 1 {
		l := <-grants
		if l == nil {
			t.Fatal("a waiter failed")
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	end := requests(t, srv)
	t.Logf("requests for %d hand-overs: %v (%.1f a grant)", waiters, sum(end, lookups)-sum(during, lookups),
		(sum(end, lookups)-sum(during, lookups))/waiters)
}

// TestRefusedTryAcquireWritesNothing: a TryAcquire of a held key reads the
// key and its holder's lease, and writes nothing (no lease, no
// transaction that puts): etcd writes go through Raft and to disk.
func TestRefusedTryAcquireWritesNothing(t *testing.T) {
	srv := testserver.StartEtcd(t)
	b := newBackend(t, newClient(t, srv))
	c := dlock.New(b)
	if _, err := c.TryAcquire(t.Context(), "job", dlock.WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	writes := []string{"LeaseGrant", "LeaseRevoke", "Put", "DeleteRange"}
	before := requests(t, srv)
	for range 10 {
		if _, err := c.TryAcquire(t.Context(), "job"); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire of a held key: %v, want ErrNotAcquired", err)
		}
	}
	if err := b.Close(); err != nil { // waits for anything left in the background
		t.Fatal(err)
	}
	after := requests(t, srv)
	if n := sum(after, writes) - sum(before, writes); n != 0 {
		t.Errorf("10 refused attempts made %v write requests, want 0", n)
	}
	if n := after["Txn"] - before["Txn"]; n != 10 {
		t.Errorf("10 refused attempts made %v transactions, want 10 (one read each)", n)
	}
}
