package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/waitfor"
	"github.com/dlock-dev/dlock/redlock"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// within bounds how long a failing call may take: generous, since the
// point is that it returns (no hang), not how fast.
const within = 10 * time.Second

// One master of three down: a quorum is left, and locks work as before,
// fences still growing; a second one down: every operation fails with
// ErrUnavailable, within the caller's deadline, and the lock is lost.
func TestMinorityDown(t *testing.T) {
	servers, clients := masters(t, 3)
	b := newBackend(t, clients, uniquePrefix())
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	ctx := t.Context()
	first := grant(t, c, "k")

	servers[0].Stop()
	l, err := c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatalf("TryAcquire with one master of three down: %v", err)
	}
	if l.Fence() <= first {
		t.Errorf("fence %d after %d", l.Fence(), first)
	}
	if _, err := c.TryAcquire(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("second TryAcquire with one master down = %v, want ErrNotAcquired", err)
	}
	rec, found, err := c.Inspect(ctx, "k")
	if err != nil || !found || rec.LockID != l.LockID() {
		t.Errorf("Inspect with one master down = %+v, %v, %v; want the holder", rec, found, err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Errorf("Refresh with one master down: %v", err)
	}

	servers[1].Stop()
	for name, call := range map[string]func(context.Context) error{
		"refresh":     l.Refresh,
		"try acquire": func(ctx context.Context) error { _, err := c.TryAcquire(ctx, "other"); return err },
		"inspect":     func(ctx context.Context) error { _, _, err := c.Inspect(ctx, "k"); return err },
	} {
		cctx, cancel := context.WithTimeout(ctx, within)
		start := time.Now()
		err := call(cctx)
		cancel()
		if !errors.Is(err, dlock.ErrUnavailable) {
			t.Errorf("%s with two masters of three down = %v, want ErrUnavailable", name, err)
		}
		if took := time.Since(start); took > within {
			t.Errorf("%s took %v", name, took)
		}
	}
	if err := l.Release(ctx); !errors.Is(err, dlock.ErrUnavailable) {
		t.Errorf("Release with two masters down = %v, want ErrUnavailable", err)
	}
}

// A lock held on a minority of masters (as after a failed acquire whose
// give-back was lost) does not hold the key: Inspect finds it free and an
// acquire gets a quorum without it.
func TestMinorityLeaseIsNoLock(t *testing.T) {
	_, clients := masters(t, 3)
	prefix := uniquePrefix()
	b := newBackend(t, clients, prefix)
	ctx := t.Context()
	stray, err := dlock.New(b.Nodes()[0], dlock.WithTTL(time.Minute)).TryAcquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	if _, found, err := c.Inspect(ctx, "k"); err != nil || found {
		t.Errorf("Inspect of a key held on one master of three = found %v, %v; want free", found, err)
	}
	l, err := c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatalf("TryAcquire of a key held on one master of three: %v", err)
	}
	if list, err := c.List(ctx, ""); err != nil || len(list) != 1 || list[0].LockID != l.LockID() {
		t.Errorf("List = %+v, %v; want only the quorum's lease", list, err)
	}
	_ = l.Release(ctx)
	_ = stray.Release(ctx)
}

// Two clients racing for one key on three masters: exactly one wins
// however the masters split, and the loser leaves nothing behind.
func TestRaceLeavesNoStrayGrant(t *testing.T) {
	_, clients := masters(t, 3)
	prefix := uniquePrefix()
	nodes := newBackend(t, clients, prefix)
	ctx := t.Context()
	for round := range 50 {
		key := fmt.Sprint("race-", round)
		type result struct {
			lock *dlock.Lock
			err  error
		}
		results := make(chan result, 2)
		for range 2 {
			b := newBackend(t, clients, prefix)
			go func() {
				l, err := dlock.New(b, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key)
				results <- result{l, err}
			}()
		}
		var winners []*dlock.Lock
		for range 2 {
			switch r := <-results; {
			case r.err == nil:
				winners = append(winners, r.lock)
			case !errors.Is(r.err, dlock.ErrNotAcquired):
				t.Fatalf("round %d: %v", round, r.err)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, len(winners))
		}
		// The loser gave back what it got: every master that holds the
		// key holds it for the winner.
		for i, n := range nodes.Nodes() {
			rec, found, err := n.Inspect(ctx, key)
			if err != nil || (found && rec.LockID != winners[0].LockID()) {
				t.Fatalf("round %d: master %d holds %+v (found %v, %v), want the winner %s or nothing", round, i, rec, found, err, winners[0].LockID())
			}
		}
	}
}

// A master that hangs (SIGSTOP) costs each operation at most the master
// timeout: the other two answer, and the lock works.
func TestHungMaster(t *testing.T) {
	servers, clients := masters(t, 3)
	b := newBackend(t, clients, uniquePrefix(), redlock.WithMasterTimeout(200*time.Millisecond))
	hang(t, servers[2])
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	l, err := c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatalf("TryAcquire with a hung master: %v", err)
	}
	if _, err := c.TryAcquire(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Errorf("second TryAcquire = %v, want ErrNotAcquired", err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Errorf("Refresh with a hung master: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release with a hung master: %v", err)
	}
	if ctx.Err() != nil {
		t.Errorf("the calls ran into the test's own bound of %v", within)
	}
}

// A waiter asks the key's primary master alone first (see Backend.Acquire).
// When the primary hangs, that look fails at the master timeout, and the
// waiter asks the other two in the same attempt, which grant the key: no
// outage for the core to ride out. With FIFO the primary's part of the
// holder's release wakes nobody, so the release wakes the waiter through
// the other masters.
func TestWaiterGrantedWhilePrimaryHangs(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(fmt.Sprint("fifo=", fifo), func(t *testing.T) {
			servers, clients := masters(t, 3)
			prefix := uniquePrefix()
			const key = "k"
			opts := []redlock.Option{redlock.WithFIFO(fifo), redlock.WithMasterTimeout(time.Second)}
			hb := newBackend(t, clients, prefix, opts...)
			wb := newBackend(t, clients, prefix, opts...)
			ctx, cancel := context.WithTimeout(t.Context(), within)
			defer cancel()
			holder, err := dlock.New(hb, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			refused := make(chan struct{})
			granted := make(chan error, 1)
			var outage atomic.Value
			go func() {
				w := dlock.New(wb, dlock.WithTTL(time.Minute), dlock.WithMaxWait(within/2),
					dlock.WithOnWait(func(dlock.Record) { close(refused) }),
					dlock.WithOnOutage(func(err error) { outage.Store(err) }))
				l, err := w.Acquire(ctx, key)
				if err == nil {
					err = l.Release(ctx)
				}
				granted <- err
			}()
			<-refused
			waitSubscribed(t, clients, 1) // before the primary hangs
			hang(t, servers[redlock.Primary(wb, key)])
			if err := holder.Release(ctx); err != nil {
				t.Fatalf("Release with the primary hung: %v", err)
			}
			if err := <-granted; err != nil {
				t.Fatalf("waiter with the primary hung: %v", err)
			}
			if err := outage.Load(); err != nil {
				t.Errorf("the waiter saw an outage: %v", err)
			}
		})
	}
}

// waitSubscribed waits until n waiters have subscribed, on every master,
// to the one channel a test's waiters watch.
func waitSubscribed(t *testing.T, clients []redis.UniversalClient, n int) {
	t.Helper()
	for _, c := range clients {
		for {
			chans, err := c.PubSubChannels(t.Context(), "*").Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(chans) == 1 && c.PubSubNumSub(t.Context(), chans[0]).Val()[chans[0]] == int64(n) {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A grant and a refresh that a quorum has answered do not wait for a
// master that hangs: here its client and the master timeout would wait an
// hour, so only the test's own bound would end such a wait. (A release
// waits for every master; see Backend.Release.)
func TestHungMasterDoesNotSlowDecidedCalls(t *testing.T) {
	servers, clients := masters(t, 3)
	hung := redis.NewClient(&redis.Options{
		Addr: servers[2].Addr, ContextTimeoutEnabled: true,
		ReadTimeout: -1, WriteTimeout: -1, MaxRetries: -1, DialerRetries: 1,
	})
	t.Cleanup(func() { _ = hung.Close() })
	b := newBackend(t, []redis.UniversalClient{clients[0], clients[1], hung}, uniquePrefix(), redlock.WithMasterTimeout(time.Hour))
	hang(t, servers[2])
	ctx, cancel := context.WithTimeout(t.Context(), within)
	defer cancel()
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	for round := range 3 {
		l, err := c.TryAcquire(ctx, fmt.Sprint("k", round))
		if err != nil {
			t.Fatalf("round %d: TryAcquire with a hung master: %v", round, err)
		}
		if err := l.Refresh(ctx); err != nil {
			t.Fatalf("round %d: Refresh with a hung master: %v", round, err)
		}
	}
}

// Masters restarted without persistence forget their leases. One of three
// is not enough to free a held key; two are: another client then gets it
// and the holder's refresh fails with ErrNotHeld. (This is why Redlock's
// author asks for masters that restart no sooner than the longest TTL, or
// with AOF fsync always.)
func TestRestartedMastersForget(t *testing.T) {
	servers, clients := masters(t, 3)
	prefix := uniquePrefix()
	holder, err := dlock.New(newBackend(t, clients, prefix), dlock.WithTTL(time.Minute)).TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	other := dlock.New(newBackend(t, clients, prefix), dlock.WithTTL(time.Minute))
	servers[0].Restart(t)
	if _, err := other.TryAcquire(t.Context(), "k"); !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("TryAcquire after one master of three restarted = %v, want ErrNotAcquired", err)
	}
	if err := holder.Refresh(t.Context()); err != nil {
		t.Fatalf("holder's Refresh after one restart: %v", err)
	}
	servers[1].Restart(t)
	taken, err := other.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatalf("TryAcquire after two masters of three restarted: %v", err)
	}
	if err := holder.Refresh(t.Context()); !errors.Is(err, dlock.ErrNotHeld) {
		t.Errorf("old holder's Refresh = %v, want ErrNotHeld", err)
	}
	if err := taken.Release(t.Context()); err != nil {
		t.Error(err)
	}
}

// A grant's fence is the highest its quorum counted, and the masters that
// counted less are raised to it: a later quorum without the master that
// counted most still counts higher.
func TestFenceGrowsAcrossQuorums(t *testing.T) {
	servers, clients := masters(t, 3)
	b := newBackend(t, clients, uniquePrefix())
	ahead := dlock.New(b.Nodes()[0])
	for range 5 { // master 0 counts ahead of the others
		grant(t, ahead, "k")
	}
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	first := grant(t, c, "k")
	servers[0].Stop()
	if second := grant(t, c, "k"); second <= first {
		t.Errorf("fence %d from masters 2 and 3 after %d: the masters behind were not raised", second, first)
	}
}

// grant takes key through c and gives it back, returning the grant's fence.
func grant(t *testing.T, c *dlock.Client, key string) uint64 {
	t.Helper()
	l, err := c.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	return l.Fence()
}

// A release that never reaches one master (its client's only connection
// is busy: a full pool, as under load) leaves that master's share; the
// release, confirmed by the quorum, returns at the pool timeout and goes
// on asking that master in the background until it answers, so the share does not stay for the rest of
// the TTL. A few such shares, left by different leases on different
// masters, can keep every contender from a quorum.
func TestReleaseReachesBusyMasterLater(t *testing.T) {
	servers, clients := masters(t, 3)
	busy, occupy := busyClient(t, servers[2].Addr, clients[2])
	prefix := uniquePrefix()
	b := newBackend(t, []redis.UniversalClient{clients[0], clients[1], busy}, prefix, redlock.WithMasterTimeout(5*time.Second))
	ctx := t.Context()
	l, err := dlock.New(b, dlock.WithTTL(time.Hour)).TryAcquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	share := newBackend(t, clients[2:], prefix) // master 2 through a free client
	held := func() bool { _, found, err := share.Inspect(ctx, "k"); return err == nil && found }
	// The grant returned once two masters granted; the third comes later.
	waitfor.Until(t, "master 2 grants its share", held)

	free := occupy()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release with one master of three out of reach: %v", err)
	}
	// Its release waited for the connection until the pool timeout (2 s,
	// well below the master timeout, which leaves a loaded machine time to
	// land the grant above), and is made again, in the background.
	waitfor.Until(t, "the release on master 2 times out and is retried", func() bool { return redlock.Retrying(b) == 1 })
	if !held() {
		t.Fatal("the share on the master the release could not reach is gone")
	}
	free()
	waitfor.Until(t, "the share is released once the master can be reached", func() bool {
		_, found, err := share.Inspect(ctx, "k")
		return err == nil && !found
	})
}

// A grant returns once two masters of three granted; the third, whose
// client's only connection is busy, is still being asked, and the caller
// cancelling its context right away (as callers do) does not cut it off.
// Drain waits for it, so that a program that exits after a grant leaves
// the lease on every master that answers, not on a bare quorum that the
// loss of one master would break.
func TestDrainWaitsForSlowMasterGrant(t *testing.T) {
	servers, clients := masters(t, 3)
	busy, occupy := busyClient(t, servers[2].Addr, clients[2])
	prefix := uniquePrefix()
	b := newBackend(t, []redis.UniversalClient{clients[0], clients[1], busy}, prefix, redlock.WithMasterTimeout(time.Minute))
	ctx := t.Context()
	free := occupy()

	actx, cancel := context.WithCancel(ctx)
	if _, err := dlock.New(b, dlock.WithTTL(time.Hour)).TryAcquire(actx, "k"); err != nil {
		t.Fatalf("TryAcquire with one master's client busy: %v", err)
	}
	cancel()
	free()
	if err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	share := newBackend(t, clients[2:], prefix)
	if _, found, err := share.Inspect(ctx, "k"); err != nil || !found {
		t.Errorf("share on the master that answered last: found %v, %v; want the lease there too", found, err)
	}
}

// A master that refuses connections is down: a release confirmed by the
// others does not go on asking it, which with one master of three down
// would set every release retrying.
func TestReleaseDoesNotRetryMasterDown(t *testing.T) {
	servers, clients := masters(t, 3)
	b := newBackend(t, clients, uniquePrefix())
	ctx := t.Context()
	l, err := dlock.New(b, dlock.WithTTL(time.Hour)).TryAcquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	servers[2].Stop()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release with one master of three down: %v", err)
	}
	if n := redlock.Retrying(b); n != 0 {
		t.Errorf("%d releases are being made again; want none for a master that is down", n)
	}
}

// A grant that lands on a master after the master timeout is kept: the
// core may ask again with the same token, and a release of the late grant
// could take that attempt's share instead (redlock marks its calls with
// detach.KeepLate). The slow master's client does not end calls at their
// deadline, so redislock's call to it goes on past the timeout, and without
// the mark redislock would release the grant when it landed.
func TestLateGrantOnSlowMasterIsKept(t *testing.T) {
	servers, clients := masters(t, 3)
	slow := redis.NewClient(&redis.Options{Addr: servers[2].Addr}) // not deadline-aware
	t.Cleanup(func() { _ = slow.Close() })
	prefix := uniquePrefix()
	b := newBackend(t, []redis.UniversalClient{clients[0], clients[1], slow}, prefix, redlock.WithMasterTimeout(200*time.Millisecond))
	ctx := t.Context()
	c := dlock.New(b, dlock.WithTTL(time.Hour))
	// Load the scripts: a call whose context ended sends no EVAL after a
	// NOSCRIPT.
	if err := c.Do(ctx, "warm-up", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := clients[2].Do(ctx, "CLIENT", "PAUSE", 60000, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	unpause := func() { _ = clients[2].Do(context.Background(), "CLIENT", "UNPAUSE").Err() }
	t.Cleanup(unpause)

	l, err := c.TryAcquire(ctx, "k")
	if err != nil {
		t.Fatalf("TryAcquire with one master's scripts held: %v", err)
	}
	// The slow master's call gives up at the master timeout, and only
	// then does its script go through.
	if err := redlock.WaitMasterCalls(ctx, b); err != nil {
		t.Fatal(err)
	}
	unpause()
	if err := b.Drain(ctx); err != nil { // the slow master's call, and what follows its reply
		t.Fatal(err)
	}
	share := newBackend(t, clients[2:], prefix)
	if rec, found, err := share.Inspect(ctx, "k"); err != nil || !found || rec.LockID != l.LockID() {
		t.Errorf("share on the slow master: %+v found %v, %v; want the late grant kept for %s", rec, found, err, l.LockID())
	}
}

// A minimum hold's keep that the key's primary master did not get (its
// client's only connection busy) is made again once the master can be
// reached. Left with the lease of a minute, the primary would refuse a
// waiter's look until then (a waiter asks it alone first): the waiter is
// granted once the kept lease ends, not a minute later.
func TestKeepReachesBusyPrimaryLater(t *testing.T) {
	servers, clients := masters(t, 3)
	prefix := uniquePrefix()
	const key = "k"
	primary := redlock.Primary(newBackend(t, clients, prefix), key)
	busy, occupy := busyClient(t, servers[primary].Addr, clients[primary])
	holderClients := append([]redis.UniversalClient(nil), clients...)
	holderClients[primary] = busy
	hb := newBackend(t, holderClients, prefix, redlock.WithMasterTimeout(5*time.Second))
	ctx := t.Context()
	l, err := dlock.New(hb, dlock.WithTTL(time.Minute)).TryAcquire(ctx, key, dlock.WithMinHold(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	shares := newBackend(t, clients, prefix).Nodes()
	waitfor.Until(t, "the primary grants its share", func() bool {
		_, found, err := shares[primary].Inspect(ctx, key)
		return err == nil && found
	})
	granted := make(chan error, 1)
	go func() {
		w := dlock.New(newBackend(t, clients, prefix), dlock.WithTTL(time.Minute), dlock.WithMaxWait(within))
		l, err := w.Acquire(ctx, key)
		if err == nil {
			err = l.Release(ctx)
		}
		granted <- err
	}()
	free := occupy()
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release (a keep for the min hold) with the primary out of reach: %v", err)
	}
	waitfor.Until(t, "the keep on the primary fails and is made again", func() bool { return redlock.Retrying(hb) == 1 })
	free()
	if err := <-granted; err != nil {
		t.Fatalf("waiter after the min hold: %v", err)
	}
}
