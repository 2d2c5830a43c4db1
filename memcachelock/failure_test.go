package memcachelock_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/memcachelock"
)

// patience bounds waits for something that must happen, so that a broken
// backend fails a test instead of hanging it. It is not a timing assertion.
const patience = 10 * time.Second

func uniqueKey(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return t.Name() + "-" + hex.EncodeToString(b[:])
}

func waitDone(t *testing.T, l *dlock.Lock) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(patience):
		t.Fatalf("lock %q: Done did not close within %v", l.Key(), patience)
	}
}

// A server that goes away: calls fail with ErrUnavailable, within the
// caller's deadline, and a held lock's lost signal fires once its refreshes
// have failed for a whole TTL.
func TestServerDown(t *testing.T) {
	srv := testserver.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	c := dlock.New(b)
	held, err := c.TryAcquire(t.Context(), uniqueKey(t), dlock.WithTTL(time.Second), dlock.WithAutoRefresh(true))
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.TryAcquire(ctx, uniqueKey(t)); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("TryAcquire with the server down: %v, want ErrUnavailable", err)
	}
	if _, _, err := b.Inspect(ctx, held.Key()); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("Inspect with the server down: %v, want ErrUnavailable", err)
	}
	if _, err := b.List(ctx, ""); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("List with the server down: %v, want ErrUnavailable", err)
	}
	waitDone(t, held)
	if err := held.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err after the server went away = %v, want ErrLockLost", err)
	}
}

// hungServer accepts connections and never answers, like a stopped
// (SIGSTOP) or overloaded memcached.
func hungServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; conn.Close() }()
		}
	}()
	return l.Addr().String()
}

// The caller's deadline is honoured even though gomemcache takes no
// context: the call returns the context's error long before the network
// timeout (set high here) would end it.
func TestCallerDeadlineWithHungServer(t *testing.T) {
	b := newBackend(t, []string{hungServer(t)}, memcachelock.WithTimeout(time.Minute))
	c := dlock.New(b)
	for name, op := range map[string]func(ctx context.Context) error{
		"TryAcquire": func(ctx context.Context) error { _, err := c.TryAcquire(ctx, uniqueKey(t)); return err },
		"Inspect":    func(ctx context.Context) error { _, _, err := b.Inspect(ctx, "k"); return err },
		"Release":    func(ctx context.Context) error { return b.Release(ctx, "k", "t") },
		"List":       func(ctx context.Context) error { _, err := b.List(ctx, ""); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		start := time.Now()
		err := op(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s against a hung server: %v, want context.DeadlineExceeded", name, err)
		}
		t.Logf("%s: %v", name, time.Since(start))
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v with a 100ms deadline", name, d)
		}
	}
}

// flush_all (or a restart) empties memcached under a holder: the next
// refresh fails with ErrNotHeld, the lost signal fires, and a new grant
// still gets a higher fence because the counter is re-seeded from the clock.
func TestFlushAll(t *testing.T) {
	srv := testserver.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	c := dlock.New(b)
	ctx := t.Context()
	key := uniqueKey(t)
	l, err := c.TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := memcache.New(srv.Addr).FlushAll(); err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Refresh after flush_all: %v, want ErrNotHeld", err)
	}
	waitDone(t, l)
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err after flush_all = %v, want ErrLockLost", err)
	}
	l2, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence after flush_all = %d, not above %d", l2.Fence(), l.Fence())
	}
}

// A restarted server has lost every lock. The first call may fail on a
// pooled connection to the old process (ErrUnavailable, the lock stays
// valid); a later refresh finds the lease gone and fires the lost signal.
func TestRestart(t *testing.T) {
	srv := testserver.Memcached(t)
	b := newBackend(t, []string{srv.Addr})
	c := dlock.New(b)
	ctx := t.Context()
	l, err := c.TryAcquire(ctx, uniqueKey(t), dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	testserver.Restart(t, srv, testserver.Binary(t, "memcached"), testserver.MemcachedArgs)
	for attempt := 1; ; attempt++ {
		err := l.Refresh(ctx)
		if errors.Is(err, dlock.ErrNotHeld) {
			break
		}
		if !errors.Is(err, dlock.ErrUnavailable) || attempt == 3 {
			t.Fatalf("Refresh %d after a restart: %v, want ErrUnavailable then ErrNotHeld", attempt, err)
		}
	}
	waitDone(t, l)
	if err := l.Err(); !errors.Is(err, dlock.ErrLockLost) {
		t.Errorf("Err after restart = %v, want ErrLockLost", err)
	}
}

// A foreign or damaged item under the backend's prefix is reported as
// ErrCorrupt and never overwritten.
func TestCorruptItem(t *testing.T) {
	srv := testserver.Memcached(t)
	prefix := uniquePrefix(t)
	b, err := memcachelock.New([]string{srv.Addr}, memcachelock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	key := "corrupt"
	itemKey := prefix + "lk:" + base64.RawURLEncoding.EncodeToString([]byte(key))
	mc := memcache.New(srv.Addr)
	if err := mc.Set(&memcache.Item{Key: itemKey, Value: []byte("not a lock")}); err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b)
	if _, err := c.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("TryAcquire over a corrupt item: %v, want ErrCorrupt", err)
	}
	if _, _, err := c.Inspect(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("Inspect of a corrupt item: %v, want ErrCorrupt", err)
	}
	if _, _, err := c.Break(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("Break of a corrupt item: %v, want ErrCorrupt", err)
	}
	if it, err := mc.Get(itemKey); err != nil || string(it.Value) != "not a lock" {
		t.Errorf("corrupt item after the calls = %v, %v; want it untouched", it, err)
	}
	if recs, err := c.List(ctx, ""); err != nil || len(recs) != 0 {
		t.Errorf("List with only a corrupt item = %v, %v; want it skipped", recs, err)
	}
}

// A release leaves a released record that keeps the fence, rather than
// deleting the item: a client that read "no item" before the release and
// writes after it must find its "add" refused, or it could be granted with
// a fence below the released grant's. (Found by TestProcessesContending
// under load, when releases deleted the item.)
func TestReleaseKeepsFence(t *testing.T) {
	srv := testserver.Memcached(t)
	prefix := uniquePrefix(t)
	b, err := memcachelock.New([]string{srv.Addr}, memcachelock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b)
	ctx := t.Context()
	key := "kept"
	l, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mc := memcache.New(srv.Addr)
	itemKey := prefix + "lk:" + base64.RawURLEncoding.EncodeToString([]byte(key))
	err = mc.Add(&memcache.Item{Key: itemKey, Value: []byte("a late add")})
	if !errors.Is(err, memcache.ErrNotStored) {
		t.Fatalf("add after release = %v, want it refused (ErrNotStored)", err)
	}
	l2, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence after release = %d, not above %d", l2.Fence(), l.Fence())
	}
}

// TTLs beyond memcached's 30-day relative limit are sent as absolute
// times; sent as relative seconds memcached would drop them at once.
func TestLongTTL(t *testing.T) {
	srv := testserver.Memcached(t)
	c := dlock.New(newBackend(t, []string{srv.Addr}))
	ctx := t.Context()
	for _, ttl := range []time.Duration{dlock.MaxTTL - time.Second, dlock.MaxTTL} {
		l, err := c.TryAcquire(ctx, uniqueKey(t), dlock.WithTTL(ttl))
		if err != nil {
			t.Fatalf("TryAcquire with TTL %v: %v", ttl, err)
		}
		if ok, err := c.IsLocked(ctx, l.Key()); err != nil || !ok {
			t.Errorf("IsLocked after TryAcquire with TTL %v = %v, %v", ttl, ok, err)
		}
		if err := l.Refresh(ctx); err != nil {
			t.Errorf("Refresh with TTL %v: %v", ttl, err)
		}
		if err := l.Release(ctx); err != nil {
			t.Errorf("Release with TTL %v: %v", ttl, err)
		}
	}
}

// A sub-second lease ends at its exact expiry even though memcached keeps
// the item for whole seconds: another client takes it over by
// compare-and-swap while the old item is still there.
func TestSubSecondTTL(t *testing.T) {
	srv := testserver.Memcached(t)
	prefix := uniquePrefix(t)
	b, err := memcachelock.New([]string{srv.Addr}, memcachelock.WithPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := dlock.New(b), dlock.New(b)
	ctx := t.Context()
	key := "short"
	l, err := c1.TryAcquire(ctx, key, dlock.WithTTL(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, l)
	time.Sleep(time.Until(l.Record().ExpiresAt)) // the stored expiry is what is tested
	itemKey := prefix + "lk:" + base64.RawURLEncoding.EncodeToString([]byte(key))
	if _, err := memcache.New(srv.Addr).Get(itemKey); err != nil {
		t.Fatalf("memcached no longer has the item (%v): the test cannot show a takeover over it", err)
	}
	if ok, err := c2.IsLocked(ctx, key); err != nil || ok {
		t.Errorf("IsLocked after the stored expiry = %v, %v; want free", ok, err)
	}
	l2, err := c2.TryAcquire(ctx, key)
	if err != nil {
		t.Fatalf("TryAcquire after the stored expiry: %v", err)
	}
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("former holder's Release: %v, want ErrNotHeld", err)
	}
	if rec, found, err := c1.Inspect(ctx, key); err != nil || !found || rec.LockID != l2.LockID() {
		t.Errorf("Inspect after takeover = %+v, %v, %v; want the new holder", rec, found, err)
	}
}

// Memcached cannot notify waiters, so they poll, but a release by another
// goroutine of the same dlock.Client wakes them at once: with a backoff of
// an hour and a lease of a minute, the waiter is granted within its wait
// only because of that wake.
func TestLocalReleaseWakesWaiter(t *testing.T) {
	srv := testserver.Memcached(t)
	c := dlock.New(newBackend(t, []string{srv.Addr}), dlock.WithTTL(time.Minute),
		dlock.WithRetry(dlock.LinearBackoff(time.Hour)))
	key := uniqueKey(t)
	holder, err := c.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan struct{})
	granted := make(chan error, 1)
	go func() {
		l, err := c.Acquire(t.Context(), key, dlock.WithMaxWait(patience),
			dlock.WithOnWait(func(dlock.Record) { close(refused) }))
		if err == nil {
			err = l.Release(t.Context())
		}
		granted <- err
	}()
	<-refused
	if err := holder.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-granted; err != nil {
		t.Fatalf("waiter after a release by the same client: %v", err)
	}
}
