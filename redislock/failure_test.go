package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/redislock"
)

// within bounds how long a failing call may take: generous, since the
// point is that it returns (no hang), not how fast.
const within = 5 * time.Second

// TestServerDown: every operation on a server that is gone fails with
// ErrUnavailable within the caller's deadline, a caller past its own
// deadline gets its context's error, and a held lock whose refreshes fail
// fires its lost signal.
func TestServerDown(t *testing.T) {
	srv := startRedis(t)
	// One dial attempt per call instead of go-redis's five keeps the test
	// short; the behaviour is the same.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	c := dlock.New(newBackend(t, rdb))
	dlocktest.CheckStoreDown(t, c, uniqueKey(t, "down"), srv.Stop, within)
}

// TestSlowServer talks to a "server" that accepts connections and never
// answers. The client has go-redis's default timeouts (seconds), with and
// without ContextTimeoutEnabled (the backend then calls on its own
// goroutine, or on the caller's); each call must still end at the caller's
// deadline with an error that says so.
func TestSlowServer(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", direct), func(t *testing.T) { testSlowServer(t, direct) })
	}
}

func testSlowServer(t *testing.T, direct bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		var conns []net.Conn // held open, never answered
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	rdb := newClient(t, ln.Addr().String())
	if direct {
		rdb = newDirectClient(t, ln.Addr().String())
	}
	c := dlock.New(newBackend(t, rdb))
	const deadline = 200 * time.Millisecond
	for name, op := range map[string]func(ctx context.Context) error{
		"TryAcquire": func(ctx context.Context) error { _, err := c.TryAcquire(ctx, "slow"); return err },
		"Acquire":    func(ctx context.Context) error { _, err := c.Acquire(ctx, "slow"); return err },
		"Inspect":    func(ctx context.Context) error { _, _, err := c.Inspect(ctx, "slow"); return err },
		"List":       func(ctx context.Context) error { _, err := c.List(ctx, ""); return err },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		start := time.Now()
		err := op(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a silent server: %v, want context.DeadlineExceeded", name, err)
		}
		// go-redis alone would wait for its read timeout (seconds).
		if d := time.Since(start); d > deadline+time.Second {
			t.Errorf("%s returned %v after its %v deadline", name, d-deadline, deadline)
		}
	}
}

// TestErrorReplies: a key holding another type is corrupt, not free; a
// server refusing writes is unavailable.
func TestErrorReplies(t *testing.T) {
	srv := startRedis(t)
	rdb := newClient(t, srv.Addr)
	ctx := t.Context()
	c := dlock.New(newBackend(t, rdb, redislock.WithPrefix("")))

	key := uniqueKey(t, "hash")
	if err := rdb.HSet(ctx, key, "field", "value").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("TryAcquire of a key holding a hash: %v, want ErrCorrupt", err)
	}
	if _, _, err := c.Inspect(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
		t.Errorf("Inspect of a key holding a hash: %v, want ErrCorrupt", err)
	}
	if n, _ := rdb.HLen(ctx, key).Result(); n != 1 {
		t.Errorf("the hash was changed: %d fields", n)
	}

	// Out of memory: the server answers every write with an OOM error.
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.ConfigSet(context.Background(), "maxmemory", "0") })
	_, err := c.TryAcquire(ctx, uniqueKey(t, "oom"))
	if !errors.Is(err, dlock.ErrUnavailable) || !errors.Is(err, redis.Error(nil)) && !isRedisErr(err) {
		t.Errorf("TryAcquire on a server out of memory: %v, want ErrUnavailable wrapping the server's error", err)
	}
}

func isRedisErr(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// failedAcquires passes calls through and reports each Acquire that
// failed, without blocking the caller.
type failedAcquires struct {
	dlock.Backend
	failed chan error
}

func (f *failedAcquires) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := f.Backend.Acquire(ctx, req)
	if err != nil {
		select {
		case f.failed <- err:
		default:
		}
	}
	return rec, granted, err
}

// TestWaiterRidesOutRestart: a waiter whose server goes down keeps
// waiting instead of failing, and takes the key once the server is back
// (empty: the holder's lease is lost with it).
func TestWaiterRidesOutRestart(t *testing.T) {
	srv := startRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	b := newBackend(t, rdb)
	key := uniqueKey(t, "rides-out")
	holder, err := dlock.New(b).TryAcquire(t.Context(), key, dlock.WithTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	watched, denied := dlocktest.WatchDenials(b)
	f := &failedAcquires{Backend: watched, failed: make(chan error, 1)}
	waiter := dlock.New(struct {
		*failedAcquires
		dlock.Notifier
	}{f, watched.(dlock.Notifier)})
	type result struct {
		l   *dlock.Lock
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := waiter.Acquire(t.Context(), key, dlock.WithMaxWait(time.Minute))
		done <- result{l, err}
	}()
	<-denied
	srv.Stop()
	// The lost connection wakes the waiter, whose look fails.
	if err := <-f.failed; !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("attempt with the server down: %v, want ErrUnavailable", err)
	}
	srv.StartAgain(t)
	r := <-done
	if r.err != nil {
		t.Fatalf("waiter across a restart: %v, want the key once the server is back", r.err)
	}
	if rec, found, err := b.Inspect(t.Context(), key); err != nil || !found || rec.LockID != r.l.LockID() {
		t.Errorf("after the restart the key is held by %+v (found %v, %v), want the waiter %s", rec, found, err, r.l.LockID())
	}
	if err := holder.Refresh(t.Context()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("the old holder's refresh after the restart: %v, want ErrNotHeld", err)
	}
	if err := r.l.Release(t.Context()); err != nil {
		t.Error(err)
	}
}

// TestRestartLosesLock restarts the server (no persistence) under a holder
// whose watchdog refreshes it: the next refresh finds the lease gone and
// the lost signal fires, long before the TTL would have ended it. After the
// restart the fence counter starts again: fences repeat, as documented.
func TestRestartLosesLock(t *testing.T) {
	srv := startRedis(t)
	rdb := newClient(t, srv.Addr)
	c := dlock.New(newBackend(t, rdb))
	key := uniqueKey(t, "restarted")
	const ttl = 10 * time.Second
	l, err := c.TryAcquire(t.Context(), key, dlock.WithTTL(ttl),
		dlock.WithAutoRefresh(true), dlock.WithRefreshInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	oldFence := l.Fence()
	start := time.Now()
	srv.Restart(t)
	select {
	case <-l.Done():
	case <-time.After(ttl):
		t.Fatal("lost signal did not fire after the server restarted")
	}
	err = l.Err()
	if !errors.Is(err, dlock.ErrLockLost) || !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("Err = %v, want ErrLockLost from a refresh that found the lease gone", err)
	}
	if d := time.Since(start); d >= ttl/2 {
		t.Errorf("lost after %v: that is expiry, not detection", d)
	}
	l2, err := c.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("TryAcquire after the restart: %v", err)
	}
	if l2.Fence() > oldFence {
		t.Logf("fence %d after restart (was %d)", l2.Fence(), oldFence)
	} else {
		t.Logf("fence repeated after a restart without persistence: %d, was %d (documented)", l2.Fence(), oldFence)
	}
	_ = l2.Release(t.Context())
}

// TestForeignLockers: with an empty prefix, dlock and other SET-NX-PX
// lockers on the same Redis key exclude each other, and each other's
// compare-and-delete works.
func TestForeignLockers(t *testing.T) {
	srv := startRedis(t)
	rdb := newClient(t, srv.Addr)
	ctx := t.Context()
	c := dlock.New(newBackend(t, rdb, redislock.WithPrefix("")))
	key := uniqueKey(t, "shared")

	// Another library holds the key.
	const theirs = "their-random-value"
	if ok, err := rdb.SetNX(ctx, key, theirs, 5*time.Second).Result(); err != nil || !ok {
		t.Fatalf("SET NX PX: %v, %v", ok, err)
	}
	_, err := c.TryAcquire(ctx, key)
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) || nae.Holder == nil {
		t.Fatalf("TryAcquire of a key another library holds: %v", err)
	}
	if nae.Holder.LockID != dlock.LockID(theirs) || nae.Holder.ExpiresAt.IsZero() {
		t.Errorf("holder = %+v, want lock id of their value and an expiry", nae.Holder)
	}
	// Their compare-and-delete (as redsync, redis-py and the seeds do it).
	const unlock = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end`
	if n, err := rdb.Eval(ctx, unlock, []string{key}, theirs).Int(); err != nil || n != 1 {
		t.Fatalf("their unlock: %d, %v", n, err)
	}

	// dlock holds the key: their SET NX fails, and the value is our token.
	l, err := c.TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := rdb.SetNX(ctx, key, theirs, 5*time.Second).Result(); err != nil || ok {
		t.Fatalf("their SET NX while dlock holds the key = %v, %v; want refused", ok, err)
	}
	if v, _ := rdb.Get(ctx, key).Result(); v != l.Token() {
		t.Errorf("the key holds %q, want the token", v)
	}
	if pttl, _ := rdb.PTTL(ctx, key).Result(); pttl <= 0 || pttl > time.Minute {
		t.Errorf("PTTL = %v, want the lease's expiry", pttl)
	}
	if n, err := rdb.Eval(ctx, unlock, []string{key}, theirs).Int(); err != nil || n != 0 {
		t.Errorf("their unlock of our lock with their value: %d, %v; want 0", n, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, key).Result(); n != 0 {
		t.Error("key still exists after release")
	}
}

// TestSentinelFailover promotes a replica under a holder and a waiter, both
// on Sentinel failover clients: after the switch the holder's lease (which
// reached the replica, since the holder's backend waits for it with
// WithReplicas) is still its own to refresh and release, the waiter is
// woken by that release on the new master, and fences keep growing.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := testserver.StartRedisFailover(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	failoverClient := func() *redis.Client {
		rdb := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs, ContextTimeoutEnabled: true,
		})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	holderRDB := failoverClient()
	holder := dlock.New(newBackend(t, holderRDB, redislock.WithReplicas(1, time.Second)))
	waiter := dlock.New(newBackend(t, failoverClient()))
	key := uniqueKey(t, "failover")

	// A lease far longer than the test: only a wake-up lets the waiter in.
	const ttl = 5 * time.Minute
	l, err := holder.TryAcquire(ctx, key, dlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	granted := make(chan *dlock.Lock, 1)
	waitErr := make(chan error, 1)
	go func() {
		w, err := waiter.Acquire(ctx, key, dlock.WithTTL(ttl))
		if err != nil {
			waitErr <- err
			return
		}
		granted <- w
	}()
	// The waiter subscribes once its first attempt is refused.
	channel := "dlock:wake:" + redislock.DefaultPrefix + key
	subscribed := func(rdb *redis.Client, where string) {
		waitfor.Until(t, "the waiter's subscription "+where, func() bool {
			n, err := rdb.PubSubNumSub(ctx, channel).Result()
			return err == nil && n[channel] > 0
		})
	}
	subscribed(newClient(t, s.MasterAddr), "on the master")

	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	// Until the client hears of the switch it may still reach the former
	// master, now a read-only replica, and until the Sentinel makes the
	// former master a replica of the new one, no replica acknowledges a
	// refresh: such calls fail, typed.
	waitfor.Until(t, "a refresh on the new master", func() bool {
		err := l.Refresh(ctx)
		if err != nil && !errors.Is(err, dlock.ErrUnavailable) {
			t.Fatalf("Refresh during the switch: %v, want nil or ErrUnavailable", err)
		}
		return err == nil
	})
	select {
	case w := <-granted:
		t.Fatalf("waiter granted fence %d while the holder still held the key", w.Fence())
	case err := <-waitErr:
		t.Fatalf("waiter: %v", err)
	default:
	}
	// The Sentinel closed the waiter's pub/sub connection to the former
	// master; go-redis reopens it to the new one.
	subscribed(newClient(t, s.MasterAddr), "on the new master")
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release after the failover: %v", err)
	}
	select {
	case w := <-granted:
		if w.Fence() <= l.Fence() {
			t.Errorf("fence after the failover %d, not above %d", w.Fence(), l.Fence())
		}
		if err := w.Release(ctx); err != nil {
			t.Error(err)
		}
	case err := <-waitErr:
		t.Fatalf("waiter: %v", err)
	}
}

// TestAcquireAfterClose: a closed backend has no pub/sub connection, so an
// Acquire that would have to wait fails with ErrClosed at once; one
// that finds its key free is granted, as a TryAcquire would be.
func TestAcquireAfterClose(t *testing.T) {
	srv := startRedis(t)
	rdb := newClient(t, srv.Addr)
	prefix := redislock.WithPrefix(uniquePrefix())
	holder := dlock.New(newBackend(t, rdb, prefix))
	closed := newBackend(t, rdb, prefix)
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	c := dlock.New(closed)
	ctx := t.Context()

	held, err := holder.TryAcquire(ctx, "held", dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(ctx)
	if _, err := c.Acquire(ctx, "held", dlock.WithMaxWait(time.Minute)); !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("Acquire of a held key after Close: %v, want ErrClosed", err)
	}
	l, err := c.Acquire(ctx, "free", dlock.WithMaxWait(time.Minute))
	if err != nil {
		t.Fatalf("Acquire of a free key after Close: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Error(err)
	}
}

// TestWaiterEndsWhenClientClosed: closing the go-redis client under a
// waiter ends its wait with ErrClosed (which matches ErrUnavailable), where
// an outage would be waited out.
func TestWaiterEndsWhenClientClosed(t *testing.T) {
	srv := startRedis(t)
	key := uniqueKey(t, "closed")
	holder, err := dlock.New(newBackend(t, newClient(t, srv.Addr))).TryAcquire(t.Context(), key, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(t.Context())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	watched, denied := dlocktest.WatchDenials(newBackend(t, rdb))
	waitErr := make(chan error, 1)
	go func() {
		_, err := dlock.New(watched).Acquire(t.Context(), key, dlock.WithMaxWait(time.Minute))
		waitErr <- err
	}()
	<-denied
	if err := rdb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, dlock.ErrClosed) || !errors.Is(err, dlock.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter whose client was closed: %v, want ErrClosed at once", err)
	}
	if _, err := dlock.New(watched).TryAcquire(t.Context(), key); !errors.Is(err, dlock.ErrClosed) {
		t.Errorf("TryAcquire on a closed client: %v, want ErrClosed", err)
	}
}
