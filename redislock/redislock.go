// Package redislock is a dlock backend on Redis, over the go-redis v9
// [redis.UniversalClient] your program already has: a single node, a
// Sentinel failover client or a Cluster client.
//
// # How a lock is stored
//
// The lock key (prefix + key, default prefix "dlock:") holds the holder's
// token as a plain string with a PX expiry, set with SET NX PX. With
// WithPrefix("") the lock key is exactly the caller's key, so dlock and any
// other SET-NX-PX locker on the same Redis key (redsync, bsm/redislock,
// redis-py's Lock, hand-written PHP or Python classes) exclude each other.
// Beside it, in the same Redis Cluster hash slot, live the metadata (lock
// id, fence, owner, acquired time in MessagePack; same expiry), the fence
// counter and, with FIFO, the waiter queue. Every operation is one Lua
// script: one atomic round trip. Refresh and release compare the token
// before they extend or delete; nothing is ever deleted blindly.
//
// # Time
//
// Leases expire by the server's clock (PX). Whether the caller may still
// assume it holds a lock is measured by dlock on the caller's monotonic
// clock from the moment the request was sent, minus a drift margin. A
// record's expiry is the remaining TTL the server reports added to the
// caller's clock; its acquired time is the acquirer's wall clock.
//
// # Waiting
//
// The Backend is a [dlock.Notifier]: release, break and cleanup PUBLISH on
// a channel per key, and each Backend multiplexes all the keys its waiters
// watch over one shared pub/sub connection, so a blocked Acquire sleeps
// until the key is released or its holder's lease ends instead of polling.
// [WithFIFO] grants a contended key in arrival order (see its comment).
//
// # Round trips
//
// Each operation is one script, sent at once while fewer than four of the
// backend's scripts are in flight. Beyond that, scripts queue and go out
// together as one pipeline when a script in flight returns, so that under
// heavy parallel load many callers share a round trip. A queued caller
// still returns at its context's deadline.
//
// # Guarantees
//
//   - Mutual exclusion: while the Redis node that owns the key keeps its
//     data. A failover to a replica that had not received the grant, or a
//     restart without persistence, loses leases: the holder finds out at
//     its next refresh (its lost signal fires). [WithReplicas] makes grants
//     and refreshes wait for replicas, so that a failover to one of them
//     keeps the lease.
//   - Fences: strictly increasing while the fence counter survives, that is
//     with AOF and appendfsync always and no failover (or, with
//     WithReplicas, a failover to a replica that acknowledged). After a
//     restart without persistence, another failover or an eviction of the
//     counter (use a noeviction or volatile-* maxmemory policy), fences can
//     repeat.
//   - Expiry: at the TTL by the server's clock; a crashed holder's lock is
//     free after its TTL.
//
// Errors: transport failures and error replies wrap [dlock.ErrUnavailable];
// a key holding a non-string value wraps [dlock.ErrCorrupt]; a cancelled or
// expired context is returned as is (wrapped), even when the client's own
// timeouts are longer, since each call returns at the context's deadline.
package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/detach"
)

// DefaultPrefix is put in front of every key unless [WithPrefix] says
// otherwise.
const DefaultPrefix = "dlock:"

// DefaultFIFOGrace is how long a FIFO ticket outlives the moment its waiter
// was due to try again; see [WithFIFOGrace].
const DefaultFIFOGrace = 2 * time.Second

// Backend keeps locks in Redis. It is safe for concurrent use. Call
// [Backend.Close] when done with it; it does not close the go-redis client.
type Backend struct {
	rdb    redis.UniversalClient
	prefix string
	fifo   bool
	grace  time.Duration

	notify notifier
	queue  fifoState
	batch  batcher

	// direct: go-redis itself ends a call at its context's deadline and
	// bounds every call by its timeouts, so calls run on the caller's
	// goroutine (see call).
	direct bool

	named nameCache

	// running counts the work that goes on after its caller left: calls
	// that run on goroutines of their own, the releases of acquires that
	// landed late, batches in flight and FIFO tickets being dropped.
	running detach.Group
}

var (
	_ dlock.Backend       = (*Backend)(nil)
	_ dlock.Lister        = (*Backend)(nil)
	_ dlock.StatsReporter = (*Backend)(nil)
	_ dlock.Cleaner       = (*Backend)(nil)
	_ dlock.Breaker       = (*Backend)(nil)
	_ dlock.Notifier      = (*Backend)(nil)
	_ dlock.Keeper        = (*Backend)(nil)
	_ dlock.Drainer       = (*Backend)(nil)
	_ dlock.QueueReporter = (*Backend)(nil)
)

// Option configures a [Backend].
type Option func(*options)

type options struct {
	prefix   string
	fifo     bool
	grace    time.Duration
	replicas replicaWait
	err      error
}

// WithPrefix sets the text put in front of every key to form the Redis key.
// Default [DefaultPrefix] ("dlock:"). "" makes the lock key exactly the
// caller's key, for exclusion with other SET-NX-PX lockers (compatibility
// mode). A prefix that is not valid UTF-8 or contains control characters
// makes [New] fail with [dlock.ErrInvalidOption].
func WithPrefix(prefix string) Option {
	return func(o *options) {
		if prefix != "" {
			if err := dlock.ValidateKey(prefix); err != nil {
				o.err = fmt.Errorf("redislock: %w: prefix: %w", dlock.ErrInvalidOption, err)
			}
		}
		o.prefix = prefix
	}
}

// WithFIFO turns first-come-first-served order on or off. Default off:
// whoever asks first after a release gets the key. On: a waiting Acquire
// takes a ticket in a per-key queue and the key is granted only to the
// first live ticket (or to anyone when the queue is empty), so under
// contention every waiter gets its turn. A one-shot TryAcquire respects the
// queue but does not join it. A waiter whose context ends leaves the queue
// at once. One that died or missed its wake-up loses its place once the
// key has been free for the grace ([WithFIFOGrace]) while others asked for
// it, and a ticket nobody renews lapses after the grace past its owner's
// next due attempt. All clients of a key must agree: a client without FIFO
// ignores the queue.
func WithFIFO(on bool) Option { return func(o *options) { o.fifo = on } }

// WithFIFOGrace sets how long a FIFO ticket stays valid after its waiter
// was due to use or renew it. Default [DefaultFIFOGrace]. It bounds the
// delay a crashed waiter causes; it must cover a woken waiter's scheduling
// delay and round trip. A value below 10ms makes [New] fail with
// [dlock.ErrInvalidOption].
func WithFIFOGrace(d time.Duration) Option {
	return func(o *options) {
		if d < 10*time.Millisecond {
			o.err = fmt.Errorf("redislock: %w: FIFO grace %v below 10ms", dlock.ErrInvalidOption, d)
		}
		o.grace = d
	}
}

// DefaultReplicaTimeout is how long a write waits for its replicas with
// [WithReplicas] when the URL form (?replicas=N) sets no timeout.
const DefaultReplicaTimeout = time.Second

// WithReplicas makes every grant and refresh count only once n replicas
// have acknowledged it: a WAIT n follows the script on its connection (in
// the same round trip), for at most timeout (and no longer than the
// caller's context). A grant that fewer replicas acknowledged in time is
// given back and the acquire fails with an error wrapping
// [dlock.ErrUnavailable]; such a refresh fails the same way, and the lock
// stays valid until its validity passes, as after any failed refresh.
//
// Redis replicates asynchronously, so without it a failover can promote a
// replica that never saw a grant (or a refresh, or the fence counter's
// last INCR): a second holder then gets the key, or a fence repeats. With
// n = the number of replicas a failover may promote, a lease survives a
// failover and the fence keeps growing across it. This narrows the window;
// it does not make Redis a consensus store: Sentinel may still promote a
// replica that did not acknowledge, if the acknowledging ones are cut off.
//
// It needs a *redis.Client (a single node, or a Sentinel failover client
// from redis.NewFailoverClient), since WAIT must follow the write on the
// same connection; with another client [New] fails with
// [dlock.ErrInvalidOption], as it does for n < 0 or timeout < 1ms. timeout
// must be below the client's ReadTimeout. Default n = 0: no WAIT.
func WithReplicas(n int, timeout time.Duration) Option {
	return func(o *options) {
		if n < 0 || (n > 0 && timeout < time.Millisecond) {
			o.err = fmt.Errorf("redislock: %w: %d replicas within %v", dlock.ErrInvalidOption, n, timeout)
		}
		o.replicas = replicaWait{replicas: n, timeout: timeout}
	}
}

// New returns a backend over rdb. The caller keeps ownership of rdb. New
// makes no network call. It fails with [dlock.ErrInvalidOption] for a nil
// client or an invalid option.
//
// go-redis honours context deadlines on sockets only with
// ContextTimeoutEnabled. The backend returns at the context's deadline
// either way. With ContextTimeoutEnabled and positive read and write
// timeouts (a *redis.Client or *redis.ClusterClient), recommended, each
// call that does not queue (see Round trips in the package documentation)
// runs on the caller's goroutine, which took about 30% off the latency of
// an acquire+release pair on a 2-core VM; a context cancelled (rather than
// past its deadline) while such a command is in flight then ends the call
// at the latest at the read timeout. Without them, each call that may be cancelled runs on
// a goroutine of its own and the caller returns at once. A queued call
// always returns the moment its context ends.
func New(rdb redis.UniversalClient, opts ...Option) (*Backend, error) {
	o := options{prefix: DefaultPrefix, grace: DefaultFIFOGrace}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if rdb == nil {
		return nil, fmt.Errorf("redislock: %w: nil client", dlock.ErrInvalidOption)
	}
	if _, ok := rdb.(*redis.Client); o.replicas.replicas > 0 && !ok {
		return nil, fmt.Errorf("redislock: %w: WithReplicas needs a *redis.Client (single node or Sentinel), not a %T", dlock.ErrInvalidOption, rdb)
	}
	b := &Backend{rdb: rdb, prefix: o.prefix, fifo: o.fifo, grace: o.grace, direct: deadlineAware(rdb)}
	b.notify.init(rdb, o.fifo, o.grace)
	b.queue.init()
	b.batch.rdb = rdb
	b.batch.running = &b.running
	b.batch.replicas = o.replicas
	return b, nil
}

// Close stops the backend's pub/sub connection and drops the FIFO tickets
// of its waiters. Waiting Acquires that started before Close wake at their
// holder's expiry; new ones that find the key held fail with an error
// wrapping [dlock.ErrClosed], which matches [dlock.ErrUnavailable] (one
// that finds it free is granted, as a TryAcquire would be). The go-redis
// client stays open; calls through it once closed fail with ErrClosed too.
//
// Call [Backend.Drain] (or dlock's Client.Drain) first, so that work still
// running in the background is not cut short.
func (b *Backend) Close() error {
	b.queue.close()
	return b.notify.close()
}

// Drain implements [dlock.Drainer]: it waits until no call runs in the
// background, or ctx ends (its cause is returned then). A call whose caller
// left goes on until the client's timeouts end it; an acquire that lands
// after its caller left is then released, and a FIFO waiter that gave up
// leaves the queue, which Drain waits for too. Without it, a program that
// exits at once leaves such a grant held until its TTL, and such a ticket
// blocking the queue for the FIFO grace.
func (b *Backend) Drain(ctx context.Context) error {
	b.queue.dropEnded()
	return b.running.Wait(ctx)
}

// Client returns the go-redis client the backend was built on.
func (b *Backend) Client() redis.UniversalClient { return b.rdb }

// Prefix returns the key prefix.
func (b *Backend) Prefix() string { return b.prefix }

// Acquire implements [dlock.Backend]. With FIFO on, a caller that is
// waiting (it subscribed to the key through the core) keeps a ticket in the
// queue until it is granted or its context ends.
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	n := b.names(req.Key)
	wait := waiting(ctx, req.LockID)
	var before heard // what this process had heard before this attempt
	if wait {
		before = b.notify.heard(n.channel)
	}
	mode := 0
	var ticket *ticket
	if b.fifo {
		mode = 1
		if wait && queues(ctx) {
			mode = 2
			ticket = b.queue.hold(ctx, b, req)
		}
	}
	args := []any{req.Token, req.TTL.Milliseconds(), metaBlob(req, time.Now())}
	if b.fifo {
		args = append(args, mode, b.grace.Milliseconds(), req.LockID, n.channel)
	}
	r, err := b.script(ctx, scriptCall{script: acquireScript, keys: n.acquireKeys(req.LockID, b.fifo), args: args, durable: true}, b.lateRelease(ctx, req))
	if err != nil {
		return dlock.Record{}, false, b.fail(ctx, "acquire", req.Key, err)
	}
	if wait && r.state != stateNumber {
		b.notify.refused(n.channel, req.LockID, before)
	}
	switch r.state {
	case stateNumber: // granted: the fence
		ticket.granted()
		if r.n <= 0 {
			return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w: fence %d", req.Key, dlock.ErrCorrupt, r.n)
		}
		if err := b.replicated(r); err != nil {
			// The core gives the grant back, as after any failed acquire.
			return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w", req.Key, err)
		}
		return dlock.Record{
			Key:        req.Key,
			LockID:     req.LockID,
			Fence:      uint64(r.n),
			AcquiredAt: r.local,
			ExpiresAt:  r.local.Add(req.TTL),
			Owner:      req.Owner,
		}, true, nil
	case stateQueued:
		// Free, but another waiter is first in line: report its ticket.
		// A one-shot caller is told when that lapses. A waiter is woken
		// by the notifier if the head has not come by then (and by the
		// head's release otherwise), so it looks again on its own only a
		// TTL later, as long as its ticket lasts.
		wait, _ := asInt(r.at(2))
		until := time.Duration(wait) * time.Millisecond
		rec := dlock.Record{
			Key:       req.Key,
			LockID:    asString(r.at(1)),
			ExpiresAt: r.local.Add(until),
			Owner:     dlock.Owner{Label: "next in the FIFO queue"},
		}
		if ticket != nil {
			b.notify.expectGrant(n.channel, before.grants, until+b.grace/10)
			place, _ := asInt(r.at(3))
			rec.NextLook = rec.ExpiresAt.Add(nextLook(place, req.TTL))
		}
		return rec, false, nil
	case stateWaiting:
		// Held, and the caller has its place in the FIFO queue. Only the
		// first in line looks when the lease ends; the others are woken
		// when their turn comes, or a grace after the lease ends if the
		// first in line says nothing (see notifier.wake), and look on their
		// own only later (nextLook), when their tickets run out.
		place, _ := asInt(r.at(1))
		inner, _ := r.at(2).([]any)
		h, err := parseReply(inner, r.local)
		if err == nil && h.state != stateHeld && h.state != stateForeign {
			err = fmt.Errorf("%w: state %d in a waiting reply", dlock.ErrCorrupt, h.state)
		}
		if err != nil {
			return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w", req.Key, err)
		}
		rec, err := h.record(req.Key)
		if err != nil {
			return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w", req.Key, err)
		}
		if place > 0 {
			from := rec.ExpiresAt
			if from.IsZero() { // a lease without expiry: the script's second
				from = r.local.Add(time.Second)
			}
			rec.NextLook = from.Add(nextLook(place, req.TTL))
			b.notify.expectLease(n.channel, from.Sub(r.local))
		}
		return rec, false, nil
	case stateHeld, stateForeign:
		rec, err := r.record(req.Key)
		if err != nil {
			return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w", req.Key, err)
		}
		if !b.fifo && !rec.ExpiresAt.IsZero() && wait {
			// When the lease ends one waiter of this process looks, the
			// one whose turn it is; the others a lease of their own TTL
			// later, if nothing woke them first.
			b.notify.watchExpiry(n.channel, rec.ExpiresAt)
			rec.NextLook = rec.ExpiresAt.Add(req.TTL)
		}
		return rec, false, nil
	case stateVoid:
		// Only a caller that already gave up on this token can see this.
		return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w: token already released", req.Key, dlock.ErrNotAcquired)
	}
	return dlock.Record{}, false, fmt.Errorf("redislock: acquire %q: %w: state %d", req.Key, dlock.ErrCorrupt, r.state)
}

// nextLook is how long after the lease it waits behind a FIFO waiter at
// place in the queue looks on its own: one full lease of its TTL per
// waiter ahead. Its turn comes sooner unless a holder and the next in line
// both died, which leaves nobody to announce it (the acquire script keeps
// its ticket as long).
func nextLook(place int64, ttl time.Duration) time.Duration {
	return time.Duration(max(place, 1)) * ttl
}

// lateRelease returns what to do with the reply to an acquire made with
// ctx that comes after ctx ended: the grant may still land after we
// return, so a late grant is released instead of leaving the key held
// until its TTL. (The core also releases on error, but its release can
// overtake the acquire on another connection.) nil when ctx cannot end
// before the reply, or when the caller asks again with the same token
// (detach.KeepLate: package redlock), whose later grant the release could
// take.
func (b *Backend) lateRelease(ctx context.Context, req dlock.AcquireRequest) func(reply) {
	if ctx.Done() == nil || detach.LateKept(ctx) {
		return nil
	}
	return func(r reply) {
		if r.state == stateNumber {
			ctx, cancel := context.WithTimeout(context.Background(), lateReleaseTimeout)
			defer cancel()
			_ = b.Release(ctx, req.Key, req.Token)
		}
	}
}

// lateReleaseTimeout bounds releases made for callers that gave up.
const lateReleaseTimeout = 5 * time.Second

// Refresh implements [dlock.Backend]. A refresh that ends the lease sooner
// than before wakes the key's waiters.
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	n := b.names(key)
	r, err := b.script(ctx, scriptCall{script: refreshScript, keys: n.pair(), args: []any{token, ttl.Milliseconds(), n.channel}, durable: true}, nil)
	if err != nil {
		return dlock.Record{}, b.fail(ctx, "refresh", key, err)
	}
	if r.state != stateRefreshed {
		return dlock.Record{}, fmt.Errorf("redislock: refresh %q: %w", key, dlock.ErrNotHeld)
	}
	if err := b.replicated(r); err != nil {
		return dlock.Record{}, fmt.Errorf("redislock: refresh %q: %w", key, err)
	}
	rec, err := r.record(key)
	if err != nil {
		return dlock.Record{}, fmt.Errorf("redislock: refresh %q: %w", key, err)
	}
	rec.LockID = dlock.LockID(token) // even if the metadata was lost
	return rec, nil
}

// Keep implements [dlock.Keeper]: a refresh that wakes the key's waiters
// if the lease now ends sooner. A Redis lease does not depend on its
// holder's process.
func (b *Backend) Keep(ctx context.Context, key, token string, ttl time.Duration) error {
	n := b.names(key)
	args := []any{token, ttl.Milliseconds(), n.channel}
	r, err := b.script(ctx, scriptCall{script: keepScript, keys: n.pair(), args: args, durable: true}, nil)
	if err != nil {
		return b.fail(ctx, "keep", key, err)
	}
	if r.state != stateNumber || r.n != 1 {
		return fmt.Errorf("redislock: keep %q: %w", key, dlock.ErrNotHeld)
	}
	if err := b.replicated(r); err != nil {
		return fmt.Errorf("redislock: keep %q: %w", key, err)
	}
	return nil
}

// replicated reports an error wrapping [dlock.ErrUnavailable] if the write
// r replies to reached fewer replicas than WithReplicas asks for.
func (b *Backend) replicated(r reply) error {
	w := b.batch.replicas
	if r.acked >= int64(w.replicas) {
		return nil
	}
	return fmt.Errorf("%w: acknowledged by %d of %d replicas within %v", dlock.ErrUnavailable, r.acked, w.replicas, w.timeout)
}

// RaiseFence makes the fence counter of key at least floor, so that the
// key's next grant carries a higher fence. It is for backends built on
// several Redis masters (package redlock), whose grant carries the highest
// fence of the masters that granted it: raising the others to it keeps
// the next grant's fence above it, since any two majorities share a
// master.
func (b *Backend) RaiseFence(ctx context.Context, key string, floor uint64) error {
	n := b.names(key)
	r, err := b.script(ctx, scriptCall{script: raiseFenceScript, keys: []string{n.fence}, args: []any{floor}, durable: true}, nil)
	switch {
	case err != nil:
		return b.fail(ctx, "raise fence", key, err)
	case r.state != stateNumber || r.n < 0 || uint64(r.n) < floor:
		return fmt.Errorf("redislock: raise fence %q: %w: counter %d after raising it to %d", key, dlock.ErrCorrupt, r.n, floor)
	}
	return b.replicated(r)
}

// Release implements [dlock.Backend].
func (b *Backend) Release(ctx context.Context, key, token string) error {
	return b.release(ctx, key, token, true)
}

// GiveBack releases a grant as Release does, but publishes nothing, so no
// waiter wakes: for a grant that nobody waits for, such as the share of a
// failed Redlock acquire (package redlock) given back while the key's
// other holder is the one whose release will wake the waiters.
func (b *Backend) GiveBack(ctx context.Context, key, token string) error {
	return b.release(ctx, key, token, false)
}

// Wake wakes waiters of key as a release does, without changing the key:
// for package redlock, when a share was given back without waking anyone
// in the belief that another holder's release would, and that release
// turned out to have come already.
func (b *Backend) Wake(ctx context.Context, key string) error {
	if err := b.rdb.Publish(ctx, b.names(key).channel, "").Err(); err != nil {
		return b.fail(ctx, "wake", key, err)
	}
	return nil
}

func (b *Backend) release(ctx context.Context, key, token string, wake bool) error {
	n := b.names(key)
	id := dlock.LockID(token)
	b.queue.forget(id)
	channel := ""
	if wake {
		channel = n.channel
	}
	args := []any{token, channel}
	if b.fifo {
		args = append(args, id, b.grace.Milliseconds())
	}
	r, err := b.script(ctx, scriptCall{script: releaseScript, keys: n.releaseKeys(id, b.fifo), args: args}, nil)
	if err != nil {
		return b.fail(ctx, "release", key, err)
	}
	if r.state != stateNumber || r.n != 1 {
		return fmt.Errorf("redislock: release %q: %w", key, dlock.ErrNotHeld)
	}
	return nil
}

// Waiting implements [dlock.QueueReporter]: the live tickets of key's FIFO
// queue (0 where nobody waits with FIFO).
func (b *Backend) Waiting(ctx context.Context, key string) (int, error) {
	n := b.names(key)
	r, err := b.script(ctx, scriptCall{script: waitingScript, keys: []string{n.expiry}}, nil)
	if err != nil {
		return 0, b.fail(ctx, "waiting", key, err)
	}
	if r.state != stateNumber {
		return 0, fmt.Errorf("redislock: waiting %q: %w: reply state %d", key, dlock.ErrCorrupt, r.state)
	}
	return int(r.n), nil
}

// Inspect implements [dlock.Backend]. A lease taken by another library
// (no dlock metadata) is reported with the lock id its value would have as
// a dlock token, its expiry, fence 0 and no owner.
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	n := b.names(key)
	r, err := b.script(ctx, scriptCall{script: inspectScript, keys: n.pair()}, nil)
	if err != nil {
		return dlock.Record{}, false, b.fail(ctx, "inspect", key, err)
	}
	if r.state == stateFree {
		return dlock.Record{}, false, nil
	}
	rec, err := r.record(key)
	if err != nil {
		return dlock.Record{}, false, fmt.Errorf("redislock: inspect %q: %w", key, err)
	}
	return rec, true, nil
}

// Break implements [dlock.Breaker]. It also frees a key held by another
// library's lock.
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	n := b.names(key)
	r, err := b.script(ctx, scriptCall{script: breakScript, keys: n.pair(), args: []any{n.channel}}, nil)
	if err != nil {
		return dlock.Record{}, false, b.fail(ctx, "break", key, err)
	}
	if r.state == stateFree {
		return dlock.Record{}, false, nil
	}
	rec, err := r.record(key)
	if err != nil {
		// The key was freed; what it held is unreadable.
		return dlock.Record{Key: key}, true, fmt.Errorf("redislock: break %q: %w", key, err)
	}
	return rec, true, nil
}

// script runs c and parses its reply, sharing a round trip with the
// scripts of concurrent callers (see batcher). late is as for call.
func (b *Backend) script(ctx context.Context, c scriptCall, late func(reply)) (reply, error) {
	return b.batch.do(ctx, b.direct, c, late)
}

// deadlineAware reports whether rdb ends each call at its context's
// deadline and within its own read and write timeouts.
func deadlineAware(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		o := c.Options()
		return o.ContextTimeoutEnabled && o.ReadTimeout > 0 && o.WriteTimeout > 0
	case *redis.ClusterClient:
		o := c.Options()
		return o.ContextTimeoutEnabled && o.ReadTimeout > 0 && o.WriteTimeout > 0
	}
	return false
}

// onCallersGoroutine reports whether a call made with ctx runs on the
// caller's goroutine (see call).
func onCallersGoroutine(ctx context.Context, direct bool) bool {
	return direct || ctx.Done() == nil
}

// call runs fn and returns its result, or ctx's error as soon as ctx ends.
// With direct (the client honours deadlines itself) or a context that
// cannot end, fn runs on the caller's goroutine: handing the call to
// another goroutine and back costs two thread wake-ups, about as much as
// the round trip itself. Otherwise go-redis would bound socket reads by
// its own timeouts only, so fn runs on a goroutine of its own; when ctx
// wins, fn goes on in the background and late (if not nil) receives its
// result if it succeeds.
func call[T any](ctx context.Context, g *detach.Group, direct bool, fn func(context.Context) (T, error), late func(T)) (T, error) {
	if onCallersGoroutine(ctx, direct) {
		if err := ctx.Err(); err != nil {
			var zero T
			return zero, err
		}
		return fn(ctx)
	}
	return detach.Call(ctx, g, func() (T, error) { return fn(ctx) }, late)
}

// fail wraps an error of operation op: context errors stay recognisable, a
// value of the wrong type is corrupt, a closed client is closed, anything
// else is unavailability.
func (b *Backend) fail(ctx context.Context, op, key string, err error) error {
	switch {
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || isTimeout(err)):
		if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return fmt.Errorf("redislock: %s %q: %w", op, key, err)
	case errors.Is(err, dlock.ErrCorrupt):
		return fmt.Errorf("redislock: %s %q: %w", op, key, err)
	case isRedisError(err) && strings.Contains(err.Error(), "WRONGTYPE"):
		return fmt.Errorf("redislock: %s %q: %w: key holds a value that is not a lock: %w", op, key, dlock.ErrCorrupt, err)
	case errors.Is(err, redis.ErrClosed):
		return fmt.Errorf("redislock: %s %q: %w: %w", op, key, dlock.ErrClosed, err)
	}
	return fmt.Errorf("redislock: %s %q: %w: %w", op, key, dlock.ErrUnavailable, err)
}

func isRedisError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// reply is a parsed script reply: a state and the rest.
type reply struct {
	local time.Time // caller's clock when the reply was read
	state int64
	vals  []any // vals[0] is the state
	n     int64 // the reply, if a bare integer (state stateNumber)
	acked int64 // durable call with WithReplicas: replicas that acknowledged it
}

func parseReply(v any, local time.Time) (reply, error) {
	if n, ok := v.(int64); ok {
		return reply{local: local, state: stateNumber, n: n}, nil
	}
	vals, ok := v.([]any)
	if !ok || len(vals) < 1 {
		return reply{}, fmt.Errorf("%w: unexpected script reply %v", dlock.ErrCorrupt, v)
	}
	state, ok := asInt(vals[0])
	if !ok {
		return reply{}, fmt.Errorf("%w: unexpected script reply %v", dlock.ErrCorrupt, v)
	}
	return reply{local: local, state: state, vals: vals}, nil
}

func (r reply) at(i int) any {
	if i < len(r.vals) {
		return r.vals[i]
	}
	return nil
}

// record builds the record of a reply in state held, foreign or refreshed:
// [state, value, pttl, id, fence, at, host, pid, label].
func (r reply) record(key string) (dlock.Record, error) {
	rec := dlock.Record{Key: key}
	if pttl, ok := asInt(r.at(2)); ok && pttl >= 0 {
		rec.ExpiresAt = r.local.Add(time.Duration(pttl) * time.Millisecond)
	}
	if r.state == stateForeign {
		// Another library's lock: its value plays the token's part.
		rec.LockID = dlock.LockID(asString(r.at(1)))
		return rec, nil
	}
	rec.LockID = asString(r.at(3))
	if f := r.at(4); f != nil {
		fence, ok := asInt(f)
		if !ok || fence <= 0 {
			return dlock.Record{}, fmt.Errorf("%w: fence %q", dlock.ErrCorrupt, asString(f))
		}
		rec.Fence = uint64(fence)
	}
	if at, ok := asInt(r.at(5)); ok {
		rec.AcquiredAt = time.UnixMilli(at) // the acquirer's clock
	}
	rec.Owner.Host = asString(r.at(6))
	rec.Owner.PID, _ = strconv.Atoi(asString(r.at(7)))
	rec.Owner.Label = asString(r.at(8))
	return rec, nil
}

func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int64:
		return v, true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	return 0, false
}

func asString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	}
	return ""
}
