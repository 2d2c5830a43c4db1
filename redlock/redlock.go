// Package redlock is a dlock backend that runs the Redlock algorithm over
// several independent Redis masters: a lock is held while a majority of
// them (the quorum) hold it. It survives the loss of a minority of the
// masters, which a single Redis, even with replicas, does not: Redis
// replicates asynchronously, so a failover may lose a grant.
//
// Each master is driven by a [redislock.Backend] (same keys, scripts and
// pub/sub wake-ups as the Redis backend), and every operation goes to all
// masters at once:
//
//   - Acquire is granted when a quorum granted it. Otherwise (after the
//     holder of the key's primary master, if it is one of the contenders
//     of a split vote, asked the others again; see splitBackoff) the
//     masters that granted it, or did not answer, release it at once, and
//     the caller is told of the holder most of the refusing masters named. The
//     core measures the lease's validity from before the first request was
//     sent, so the time the round took is already deducted, as Redlock
//     requires.
//   - Refresh, Keep and Release succeed when a quorum did; the lock is not
//     held (an error wrapping [dlock.ErrNotHeld]) when more masters than
//     the quorum allows say so; otherwise the answer is
//     [dlock.ErrUnavailable].
//   - Inspect, List and Stats show leases held by a quorum.
//   - Break and Cleanup run on every master.
//   - Waiters subscribe to every master and are woken by a release on any.
//     Once subscribed, a waiter asks the key's primary master alone first,
//     and the others only if the primary did not refuse it: each release
//     wakes a waiter in every process, and all but one are refused.
//     [WithFIFO] keeps a FIFO queue on the primary instead, and a release
//     wakes the next in line alone.
//
// Fences: a grant's fence is the highest its quorum counted, and before the
// grant returns, the masters of the quorum that counted less are raised to
// it (one more round trip, only when they disagree; if a raise fails the
// grant fails). Any later quorum shares a master with this one, so its
// fence is higher, as long as the masters keep their counters: a master
// restarted without persistence (AOF with appendfsync always) counts from
// zero, and then the fence, like the lock itself, holds only if no later
// quorum meets this one on that master alone. Use etcdlock when the fence
// must be sound whatever restarts.
//
// A master that does not answer costs nothing to a grant, refresh or keep
// that a quorum of the others has decided: they return at once, and the
// call to that master goes on in the background (a late grant is kept, or
// given back if the grant failed; [Backend.Drain] waits for those calls).
// Other operations, a refused acquire and a release among them, wait for
// it up to the master timeout ([WithMasterTimeout]). One that is down
// should cost nothing either: give
// the go-redis clients MaxRetries: -1 and DialerRetries: 1, so that a
// refused connection fails at once instead of being retried until the
// master timeout (as the dlock command does), and short DialTimeout,
// ReadTimeout and WriteTimeout, as Redlock advises. Use an odd number of
// masters, at least three.
package redlock

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/detach"
	"github.com/dlock-dev/dlock/redislock"
)

// Backend keeps locks on a quorum of Redis masters. It is safe for
// concurrent use. Call Close when done with it.
type Backend struct {
	nodes   []*redislock.Backend
	quorum  int
	timeout time.Duration // bounds each call to one master
	fifo    bool          // FIFO queue on each key's primary master

	// Calls left running by an operation that returned without them (see
	// eachUntil), for Drain.
	inflight detach.Group

	// Releases a master did not confirm, made again in the background
	// (see releaseLater) until Close ends life.
	life     context.Context
	stop     context.CancelFunc
	mu       sync.Mutex
	retrying map[leg]bool // at most one retry per leg at a time

	// Waits subscribed through Subscribe, by lock id: their attempts ask
	// the key's primary master alone first (see lookFirst). A master whose
	// look failed is not looked at alone again before lookPaused[i].
	watching   map[string]int
	lookPaused []atomic.Int64 // unix ns
}

// leg is one master's share of one lease.
type leg struct {
	master     int
	key, token string
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
)

// Option configures a [Backend].
type Option func(*options)

type options struct {
	node    []redislock.Option
	timeout time.Duration
	fifo    bool
	errs    []error
}

// DefaultMasterTimeout bounds each call to one master unless
// [WithMasterTimeout] says otherwise.
const DefaultMasterTimeout = time.Second

// WithMasterTimeout bounds each call to one master (default
// [DefaultMasterTimeout]), so that a master that hangs (a stopped process,
// a lost network) costs an operation at most d, whatever the caller's
// deadline: the others answer meanwhile. Keep it well below the TTL: an
// acquire that takes longer than the TTL fails. A value that is not
// positive makes [New] fail with [dlock.ErrInvalidOption].
func WithMasterTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.errs = append(o.errs, fmt.Errorf("master timeout %v is not positive", d))
		}
		o.timeout = d
	}
}

// WithFIFO turns on first-come-first-served order among waiters (default
// off). The queue lives on the key's primary master (chosen by rendezvous
// hashing, so every client picks the same), as redislock's WithFIFO keeps
// it on one server: a release wakes the one waiter whose turn it is, not a
// waiter in every process. Every acquire asks the primary first and the
// other masters only once it granted (one round trip more per grant), and
// the primary's refusal stands whatever the others would say, so that
// nobody passes the queue on a quorum without it. While the primary does
// not answer, the other masters grant in no particular order, as without
// FIFO, each grant waiting up to the master timeout for the primary.
func WithFIFO(on bool) Option {
	return func(o *options) {
		o.fifo = on
		o.node = append(o.node, redislock.WithFIFO(on))
	}
}

// WithPrefix sets the text put in front of every key on every master
// (default [redislock.DefaultPrefix]); see [redislock.WithPrefix].
func WithPrefix(prefix string) Option {
	return func(o *options) { o.node = append(o.node, redislock.WithPrefix(prefix)) }
}

// New returns a backend over the masters clients, one go-redis client each
// (a *redis.Client to each master; not a Cluster client, whose nodes are
// not independent). The caller keeps ownership of the clients. A lock is
// held on more than half of them. New fails with an error wrapping
// [dlock.ErrInvalidOption] if clients is empty or holds nil or the same
// client twice, or two *redis.Client of one address.
func New(clients []redis.UniversalClient, opts ...Option) (*Backend, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("redlock: %w: no Redis masters", dlock.ErrInvalidOption)
	}
	o := options{timeout: DefaultMasterTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if err := errors.Join(o.errs...); err != nil {
		return nil, fmt.Errorf("redlock: %w: %w", dlock.ErrInvalidOption, err)
	}
	b := &Backend{
		quorum: len(clients)/2 + 1, timeout: o.timeout, fifo: o.fifo, retrying: make(map[leg]bool),
		watching: make(map[string]int), lookPaused: make([]atomic.Int64, len(clients)),
	}
	b.life, b.stop = context.WithCancel(context.Background())
	addrs := make(map[string]bool)
	for i, c := range clients {
		if c == nil || slices.Index(clients, c) != i {
			b.Close()
			return nil, fmt.Errorf("redlock: %w: master %d is nil or given twice", dlock.ErrInvalidOption, i+1)
		}
		// Two clients of one server would give it two votes.
		if rc, ok := c.(*redis.Client); ok {
			addr := rc.Options().Addr
			if addrs[addr] {
				b.Close()
				return nil, fmt.Errorf("redlock: %w: master %s given twice", dlock.ErrInvalidOption, addr)
			}
			addrs[addr] = true
		}
		n, err := redislock.New(c, o.node...)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("redlock: %w", err)
		}
		b.nodes = append(b.nodes, n)
	}
	return b, nil
}

// Close stops every master's pub/sub connection and the releases being
// made again in the background. The go-redis clients stay open.
func (b *Backend) Close() error {
	b.stop()
	var errs []error
	for _, n := range b.nodes {
		errs = append(errs, n.Close())
	}
	return errors.Join(errs...)
}

// Nodes returns the backends of the masters, in the order of New's clients.
func (b *Backend) Nodes() []*redislock.Backend { return slices.Clone(b.nodes) }

// name names master i in errors: its address where the client has one.
func (b *Backend) name(i int) string {
	if c, ok := b.nodes[i].Client().(*redis.Client); ok {
		return c.Options().Addr
	}
	return strconv.Itoa(i + 1)
}

// tolerated is how many masters may fail while a quorum still answers.
func (b *Backend) tolerated() int { return len(b.nodes) - b.quorum }

// answer is one master's answer to one call.
type answer[T any] struct {
	v   T
	err error
}

// each calls fn on every master at once, the calls bounded by the master
// timeout (one timer for all: they start together), and returns their
// answers in the masters' order.
func each[T any](ctx context.Context, b *Backend, fn func(context.Context, *redislock.Backend) (T, error)) []answer[T] {
	out := make([]answer[T], len(b.nodes))
	eachOf(ctx, b, out, func(int) bool { return true }, fn)
	return out
}

// eachOf is each for the masters i that only(i) picks, whose answers it
// writes to out[i]; the others' stay as they were.
func eachOf[T any](ctx context.Context, b *Backend, out []answer[T], only func(i int) bool, fn func(context.Context, *redislock.Backend) (T, error)) {
	mctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	call := func(i int) {
		v, err := fn(mctx, b.nodes[i])
		out[i] = answer[T]{v, b.masterErr(ctx, mctx, i, err)}
	}
	// The first master on the caller's goroutine: one goroutine fewer to
	// start and wake per operation.
	first := -1
	var wg sync.WaitGroup
	for i := range b.nodes {
		switch {
		case !only(i):
		case first < 0:
			first = i
		default:
			wg.Go(func() { call(i) })
		}
	}
	if first >= 0 {
		call(first)
	}
	wg.Wait()
}

// masterErr names master i in err, from a call on mctx (ctx bounded by
// the master timeout).
func (b *Backend) masterErr(ctx, mctx context.Context, i int, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() == nil && mctx.Err() != nil:
		// The master timeout, not the caller's deadline: say so, and keep
		// it from reading as the caller's context error.
		return fmt.Errorf("%w: master %s: no answer within %v (%v)", dlock.ErrUnavailable, b.name(i), b.timeout, err)
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// The caller's context ended (see eachUntil: mctx is cancelled
		// then, whatever the reason): report its error.
		return fmt.Errorf("master %s: %w (%v)", b.name(i), ctx.Err(), err)
	}
	return fmt.Errorf("master %s: %w", b.name(i), err)
}

// errPending is the answer of a master still being asked when eachUntil
// returned.
var errPending = fmt.Errorf("%w: no answer yet", dlock.ErrUnavailable)

// eachUntil is each, but it returns as soon as decided holds for the
// answers in so far (errPending for those still out), so that a master
// that hangs costs an operation nothing once the others have decided it.
// The calls still running go on in the background, bounded by the master
// timeout, and late (if not nil) receives each of their answers; Drain
// waits for them.
func eachUntil[T any](ctx context.Context, b *Backend, fn func(context.Context, *redislock.Backend) (T, error), decided func([]answer[T]) bool, late func(int, answer[T])) []answer[T] {
	out := make([]answer[T], len(b.nodes))
	eachUntilOf(ctx, b, out, func(int) bool { return true }, fn, decided, late)
	return out
}

// eachUntilOf is eachUntil for the masters i that only(i) picks, whose
// answers it writes to out[i]; decided sees the others' as they were.
func eachUntilOf[T any](ctx context.Context, b *Backend, out []answer[T], only func(i int) bool, fn func(context.Context, *redislock.Backend) (T, error), decided func([]answer[T]) bool, late func(int, answer[T])) {
	type result struct {
		i int
		a answer[T]
	}
	// The calls end with the caller's context only while the caller waits
	// for them: once it has returned, the caller cancelling its context
	// (as callers do at once) must not cut off those still out.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.timeout)
	detachCalls := context.AfterFunc(ctx, cancel)
	results := make(chan result, len(b.nodes))
	started := 0
	for i := range b.nodes {
		if !only(i) {
			continue
		}
		started++
		out[i].err = errPending
		go func() {
			v, err := fn(mctx, b.nodes[i])
			results <- result{i, answer[T]{v, b.masterErr(ctx, mctx, i, err)}}
		}()
	}
	for left := started; left > 0; left-- {
		r := <-results
		out[r.i] = r.a
		if rest := left - 1; rest > 0 && decided(out) {
			detachCalls()
			b.inflight.Go(func() {
				defer cancel()
				for range rest {
					if r := <-results; late != nil {
						late(r.i, r.a)
					}
				}
			})
			return
		}
	}
	cancel()
}

// granted is a master's answer to an acquire.
type granted struct {
	rec dlock.Record
	ok  bool
}

// Split votes. When contenders split the masters between them and none has
// a quorum, the one that holds the key's primary master (chosen by
// rendezvous hashing of the masters' addresses, so every client picks the
// same whatever order it lists them in) keeps what it has and asks the
// other masters again, after splitBackoff, then twice as long, up to
// splitRetries times, while the others give theirs back at once. Without
// it every contender gives back and all of them are woken by the give-back
// to try together again: 100 processes queueing through three masters
// took 25 s instead of 2.5 s on one.
const (
	splitBackoff = time.Millisecond
	splitRetries = 4
)

// primary returns the index of key's primary master.
func (b *Backend) primary(key string) int {
	best, top := 0, uint64(0)
	for i := range b.nodes {
		h := fnv.New64a()
		h.Write([]byte(b.name(i)))
		h.Write([]byte{0})
		h.Write([]byte(key))
		if v := h.Sum64(); v > top || i == 0 {
			best, top = i, v
		}
	}
	return best
}

// Acquire implements [dlock.Backend]: granted when a quorum of masters
// granted it, in less than the TTL.
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (_ dlock.Record, won bool, _ error) {
	start := time.Now()
	primary, look := -1, false
	if b.fifo || b.subscribed(ctx, req) {
		primary = b.primary(req.Key)
		look = time.Now().UnixNano() >= b.lookPaused[primary].Load()
	}
	if b.fifo {
		// A waiter's ticket stays while it waits, not while one call to
		// the primary lasts.
		ctx = redislock.WithQueueLife(ctx, ctx)
	}
	acquire := func(ctx context.Context, n *redislock.Backend) (granted, error) {
		if b.fifo && n != b.nodes[primary] {
			ctx = redislock.WithoutQueue(ctx) // the queue is the primary's
		}
		// A grant that lands after the master timeout stays: the core asks
		// again with this token, and releasing it could take the next
		// attempt's grant; that attempt reclaims it (below), or the give-back
		// of a failed acquire frees it.
		rec, ok, err := n.Acquire(detach.KeepLate(ctx), req)
		if err == nil && !ok && rec.LockID == req.LockID {
			// This token holds the master already (an earlier attempt,
			// or a grant that landed after its master timeout): extend
			// it from now, so that it lasts as long as the core will
			// believe, and count it.
			rec, err = n.Refresh(ctx, req.Key, req.Token, req.TTL)
			ok = err == nil
		}
		return granted{rec, ok}, err
	}
	// A master that answers after a quorum granted keeps its share, and
	// gives it back if the grant failed after all (the fences could not be
	// raised, or it took longer than the TTL). That failure is an error, on
	// which the core gives up the token: no later attempt of this Acquire
	// can lose a share to this give-back.
	over := make(chan struct{})
	defer close(over)
	late := func(i int, a answer[granted]) {
		<-over
		if !won && (a.err != nil || a.v.ok) {
			b.releaseLeg(i, req.Key, req.Token, true, time.Now().Add(detach.RetryFor))
		}
	}
	as := make([]answer[granted], len(b.nodes))
	others := func(i int) bool { return true }
	decided := b.grantedByQuorum
	if b.fifo {
		// With FIFO the primary's answer decides, when it comes.
		decided = func(as []answer[granted]) bool {
			p := as[primary]
			return p.err != errPending && (p.err == nil && !p.v.ok || b.grantedByQuorum(as))
		}
	}
	if look {
		eachOf(ctx, b, as, func(i int) bool { return i == primary }, acquire)
		p := as[primary]
		if p.err == nil && !p.v.ok {
			// Held: the other masters need not be asked. Its holder's
			// release or give-back wakes us again.
			return p.v.rec, false, nil
		}
		if errors.Is(p.err, dlock.ErrUnavailable) {
			b.pauseLooks(primary)
		}
		others = func(i int) bool { return i != primary }
	}
	eachUntilOf(ctx, b, as, others, acquire, decided, late)
	for try := 0; ; try++ {
		grants, refusals, errs := sortGrants(as)
		if b.fifo && as[primary].err == nil && !as[primary].v.ok {
			// The primary keeps the FIFO queue: its refusal stands, or a
			// quorum of the others would pass the queue.
			if len(refusals) < len(b.nodes) {
				b.giveBack(ctx, req.Key, req.Token, as, false)
			}
			return as[primary].v.rec, false, nil
		}
		if len(grants) >= b.quorum {
			err := b.raiseFences(ctx, req.Key, as)
			if took := time.Since(start); err == nil && took < req.TTL {
				return merge(grants), true, nil
			} else if err == nil {
				err = fmt.Errorf("%w: the quorum took %v, longer than the TTL %v", dlock.ErrUnavailable, took, req.TTL)
			}
			b.giveBack(ctx, req.Key, req.Token, as, true)
			return dlock.Record{}, false, b.fail("acquire", req.Key, err)
		}
		if primary < 0 {
			primary = b.primary(req.Key)
		}
		// A holder with a quorum of its own (one that took the key while
		// the primary was down or lost its data) ends the race: asking
		// again is pointless, and its release is what wakes the waiters.
		// With FIFO the primary's holder is the head of the queue, and a
		// quorum without the primary is most likely the last holder's,
		// whose release is on its way: ask again as in a split vote.
		held := quorumOf(refusals, b.quorum) != nil
		if held && !(b.fifo && as[primary].v.ok) || !as[primary].v.ok || try == splitRetries || sleep(ctx, splitBackoff<<try) != nil {
			// Not granted: give back what landed, or may have (a master
			// that did not answer may have granted after all). When the
			// primary refused us, its holder wakes the waiters when it
			// wins or gives up, and a quorum's holder when it releases, so
			// this give-back wakes nobody: waking them for it set off a
			// new race after every release, or for as long as the quorum
			// was held.
			if len(refusals) < len(b.nodes) {
				if testHookGiveBack != nil {
					testHookGiveBack()
				}
				p := as[primary]
				b.giveBack(ctx, req.Key, req.Token, as, !held && (p.err != nil || p.v.ok))
				if held && p.err == nil && p.v.ok {
					b.wakeUnlessHeld(ctx, req.Key, primary)
				}
			}
			if len(errs) > b.tolerated() || len(refusals) == 0 {
				return dlock.Record{}, false, b.fail("acquire", req.Key, errors.Join(errs...))
			}
			return mostNamed(refusals), false, nil
		}
		// Ask again only the masters that refused: one that did not answer
		// would cost each round the master timeout.
		eachOf(ctx, b, as, func(i int) bool { return as[i].err == nil && !as[i].v.ok }, acquire)
	}
}

// The herd. Every release wakes a waiter in every process that waits for
// the key (pub/sub cannot pick one), and all but one of them are refused.
// Asked of every master, each of those refusals costs a script on each:
// 100 processes queueing through three masters made about 330 scripts per
// grant. So the attempts of a wait that has subscribed ask the key's
// primary master alone first, and the others only if it did not refuse
// them: a refusal costs one script, and a grant one round trip more. The
// primary's refusal is the one the split-vote rules defer to anyway. A
// share that a lost give-back left on the primary alone keeps waiters
// (not new callers, who ask every master) from the key until it expires.
// With FIFO every attempt looks first (see WithFIFO): a refused caller
// that took the other masters while the primary refused it would look,
// to the head of the queue asking them next, like a holder with a quorum.
// A primary that does not answer is not looked at alone for lookPause,
// so that a hung master does not cost every look its timeout.
const lookPause = 5 * time.Second

// subscribed reports whether this attempt is one of a wait that
// subscribed.
func (b *Backend) subscribed(ctx context.Context, req dlock.AcquireRequest) bool {
	id, ok := dlock.WaitingLockID(ctx)
	if !ok || id != req.LockID {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.watching[id] > 0
}

// pauseLooks stops looks at master i alone for lookPause.
func (b *Backend) pauseLooks(i int) {
	b.lookPaused[i].Store(time.Now().Add(lookPause).UnixNano())
}

// watch notes that the wait of ctx (see dlock.WaitingLockID) subscribed,
// until the returned function is called.
func (b *Backend) watch(ctx context.Context) func() {
	id, ok := dlock.WaitingLockID(ctx)
	if !ok {
		return func() {}
	}
	b.mu.Lock()
	b.watching[id]++
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.watching[id]--; b.watching[id] <= 0 {
			delete(b.watching, id)
		}
	}
}

// wakeUnlessHeld is for the holder of key's primary master, which gave
// its shares back without waking anyone because the other masters named a
// holder with a quorum, whose release wakes the waiters. That release may
// have come already, between the refusals and the give-back: its wake-up
// then went to waiters that the primary refused, and they wait for this
// give-back, which woke nobody. So once the shares are back, the masters
// are asked whether a holder (that one, or one since) has a quorum; if
// not, the waiters are woken through the primary master, as its holder's
// give-back would have woken them. (Without this, 100 workers on three
// masters could all wait for a whole TTL for a key nobody held.)
func (b *Backend) wakeUnlessHeld(ctx context.Context, key string, primary int) {
	ctx = context.WithoutCancel(ctx)
	recs, _ := b.foundOn(ctx, func(ctx context.Context, n *redislock.Backend) (dlock.Record, bool, error) {
		return n.Inspect(ctx, key)
	})
	if quorumOf(recs, b.quorum) != nil {
		return // its release, still to come, wakes them
	}
	mctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	_ = b.nodes[primary].Wake(mctx, key)
}

// testHookGiveBack, if set, runs as a refused acquire is about to give
// its shares back, for tests that race a release against it.
var testHookGiveBack func()

// testHookReleasePrimary, if set, runs as a FIFO release is about to
// release the key's primary master, for tests of the order.
var testHookReleasePrimary func()

// testHookRaise, if set, runs as a grant's quorum that disagrees on the
// fence is about to be raised, for tests that make the raise fail.
var testHookRaise func()

// Drain implements [dlock.Drainer]: it waits for the calls that grants,
// refreshes and keeps left running on masters slower than the quorum
// (at most the master timeout), so that a program that exits right after
// a grant leaves the lease on every master that answers, not on a bare
// quorum that the loss of one master would break, and then for each
// master's own background work (see redislock's Drain). It does not wait
// for releases being made again (see releaseLater).
func (b *Backend) Drain(ctx context.Context) error {
	if err := b.inflight.Wait(ctx); err != nil {
		return err
	}
	for _, n := range b.nodes {
		if err := n.Drain(ctx); err != nil {
			return err
		}
	}
	return nil
}

// grantedByQuorum reports whether a quorum of masters granted an acquire,
// whatever those still out say. A refusal waits for every master: the
// split-vote rules need all the answers, and shares given back in the
// background could be taken from the grant of a later attempt, which the
// core makes with the same token.
func (b *Backend) grantedByQuorum(as []answer[granted]) bool {
	grants, _, _ := sortGrants(as)
	return len(grants) >= b.quorum
}

// sortGrants sorts the masters' answers to an acquire.
func sortGrants(as []answer[granted]) (grants, refusals []dlock.Record, errs []error) {
	for _, a := range as {
		switch {
		case a.err != nil:
			errs = append(errs, a.err)
		case a.v.ok:
			grants = append(grants, a.v.rec)
		default:
			refusals = append(refusals, a.v.rec)
		}
	}
	return grants, refusals, errs
}

// sleep waits d, or returns ctx's error first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// raiseFences raises the fence counter of every master that granted with
// a lower fence than the grant's (the highest), so that any later quorum,
// which shares a master with this one, counts higher. A failure fails the
// grant, whose fence could otherwise be repeated.
func (b *Backend) raiseFences(ctx context.Context, key string, as []answer[granted]) error {
	var top, low uint64 = 0, 1<<64 - 1
	for _, a := range as {
		if a.err == nil && a.v.ok {
			top, low = max(top, a.v.rec.Fence), min(low, a.v.rec.Fence)
		}
	}
	if low == top {
		return nil // the usual case: the masters agree
	}
	if testHookRaise != nil {
		testHookRaise()
	}
	raised := make([]answer[struct{}], len(b.nodes))
	behind := func(i int) bool { a := as[i]; return a.err == nil && a.v.ok && a.v.rec.Fence < top }
	eachOf(ctx, b, raised, behind, func(ctx context.Context, n *redislock.Backend) (struct{}, error) {
		return struct{}{}, n.RaiseFence(ctx, key, top)
	})
	var errs []error
	for _, r := range raised {
		errs = append(errs, r.err)
	}
	return errors.Join(errs...)
}

// giveBack releases token on every master that did not refuse it, on a
// context of its own (the caller may have given up already), each release
// bounded by the master timeout; wake=false wakes no waiter
// (redislock.Backend.GiveBack). A master still out gets its give-back when
// it answers (see Acquire). A give-back that a master does not answer is
// not made again: the core, while it waits, asks again with the same
// token, so a release retried in the background could take a share from a
// later attempt's grant, leaving its holder without a quorum. The share is
// reclaimed by the next attempt (see Acquire), or expires; when the
// acquire fails, the core's own give-back is a Release, which is made again.
func (b *Backend) giveBack(ctx context.Context, key, token string, as []answer[granted], wake bool) {
	notRefused := func(i int) bool { return as[i].err != errPending && (as[i].err != nil || as[i].v.ok) }
	eachOf(context.WithoutCancel(ctx), b, make([]answer[struct{}], len(b.nodes)), notRefused,
		func(ctx context.Context, n *redislock.Backend) (struct{}, error) {
			return struct{}{}, b.release(ctx, n, key, token, wake)
		})
}

// release releases token on master n; wake=false wakes no waiter. With
// FIFO only the key's primary master wakes waiters: its release names the
// one whose turn it is, while a release on another master would wake
// every waiter of every process.
func (b *Backend) release(ctx context.Context, n *redislock.Backend, key, token string, wake bool) error {
	if wake && (!b.fifo || n == b.nodes[b.primary(key)]) {
		return n.Release(ctx, key, token)
	}
	return n.GiveBack(ctx, key, token)
}

// unconfirmed reports whether a master's answer to a release leaves
// unknown whether it happened (see detach.Unconfirmed).
func unconfirmed(err error) bool {
	return detach.Unconfirmed(err, dlock.ErrUnavailable, dlock.ErrClosed)
}

// maxRetrying bounds the shares being released again at one time, so that
// a master that hangs while a busy program releases does not gather a
// goroutine per release; past it, a share waits for its TTL.
const maxRetrying = 64

// releaseLater makes again, in the background, the releases of token that
// masters did not confirm (errs[i] is master i's answer), until each
// master answers, Close is called or detach.RetryFor has passed. Only for
// a token that no acquire will use again (see giveBack). A share left on a
// master that stalled for a moment, or that the release never reached (a
// full connection pool), would otherwise stay until its TTL, and a few
// such shares, left by different leases on different masters, can keep
// every contender from a quorum.
func (b *Backend) releaseLater(errs []error, key, token string, wake bool) {
	stop := time.Now().Add(detach.RetryFor)
	for i, err := range errs {
		if unconfirmed(err) {
			b.releaseLeg(i, key, token, wake, stop)
		}
	}
}

// releaseLeg releases token on master i in the background, with backoff,
// until the master answers, Close is called or stop has passed; unless it
// is being done already, or maxRetrying releases are.
func (b *Backend) releaseLeg(i int, key, token string, wake bool, stop time.Time) {
	var done func()
	if p := b.primary(key); b.fifo && wake && i != p {
		// With FIFO this share's release wakes nobody, and the next in
		// line may have found it still here and given up its turn: once
		// no quorum holds the key, wake the waiters.
		done = func() { b.wakeUnlessHeld(b.life, key, p) }
	}
	b.retryLeg(leg{i, key, token}, stop, func(ctx context.Context, n *redislock.Backend) error {
		return b.release(ctx, n, key, token, wake)
	}, done)
}

// retryLeg makes call on master l.master again, in the background, with
// backoff, while the master neither confirms nor refuses it, until stop or
// Close; done (if not nil) runs once it succeeded. At most one retry per
// leg runs at a time.
func (b *Backend) retryLeg(l leg, stop time.Time, call func(context.Context, *redislock.Backend) error, done func()) {
	if !b.claim(l) {
		return
	}
	go func() {
		defer b.unclaim(l)
		ok := false
		detach.Retry(b.life, stop, func() bool {
			ctx, cancel := context.WithTimeout(b.life, b.timeout)
			defer cancel()
			err := call(ctx, b.nodes[l.master])
			ok = err == nil
			return unconfirmed(err)
		})
		if ok && done != nil {
			done()
		}
	}()
}

// claim marks l as being retried; false if it was already, or too many
// are.
func (b *Backend) claim(l leg) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.retrying[l] || len(b.retrying) >= maxRetrying {
		return false
	}
	b.retrying[l] = true
	return true
}

func (b *Backend) unclaim(l leg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.retrying, l)
}

// errsOf returns the errors of answers, in the masters' order.
func errsOf[T any](as []answer[T]) []error {
	errs := make([]error, len(as))
	for i, a := range as {
		errs[i] = a.err
	}
	return errs
}

// merge is the record of a lease from the records of the masters that
// hold it: the one with the highest fence, which is the fence reported.
func merge(recs []dlock.Record) dlock.Record {
	return slices.MaxFunc(recs, func(a, c dlock.Record) int { return cmp.Compare(a.Fence, c.Fence) })
}

// mostNamed is the lease most of recs name (by lock id; the first named
// wins a tie), merged.
func mostNamed(recs []dlock.Record) dlock.Record {
	if len(recs) == 0 {
		return dlock.Record{}
	}
	return merge(quorumOf(recs, 0))
}

// quorumOf returns the records of the lock id named by the most of recs,
// if they number at least n; nil otherwise.
func quorumOf(recs []dlock.Record, n int) []dlock.Record {
	var best []dlock.Record
	for _, r := range recs {
		same := slices.DeleteFunc(slices.Clone(recs), func(o dlock.Record) bool { return o.LockID != r.LockID })
		if len(same) > len(best) {
			best = same
		}
	}
	if len(best) < n || len(best) == 0 {
		return nil
	}
	return best
}

// tally sorts the answers to a refresh, keep or release: nil when a quorum
// succeeded; else an error wrapping ErrNotHeld when too many masters said
// the lock is not held for a quorum to hold it, or ErrUnavailable.
func (b *Backend) tally(errs []error) error {
	ok, notHeld, other := count(errs)
	switch {
	case ok >= b.quorum:
		return nil
	case notHeld > b.tolerated():
		return fmt.Errorf("%w on %d of %d masters", dlock.ErrNotHeld, notHeld, len(b.nodes))
	}
	return fmt.Errorf("%w: %d of %d masters answered yes, %d need to: %w", dlock.ErrUnavailable, ok, len(b.nodes), b.quorum, errors.Join(other...))
}

// count sorts the masters' answers to a refresh, keep or release: how many
// succeeded, how many said the lock is not held, and the other errors.
func count(errs []error) (ok, notHeld int, other []error) {
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, dlock.ErrNotHeld):
			notHeld++
		default:
			other = append(other, err)
		}
	}
	return ok, notHeld, other
}

// Refresh implements [dlock.Backend].
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	as := eachUntil(ctx, b, func(ctx context.Context, n *redislock.Backend) (dlock.Record, error) {
		return n.Refresh(ctx, key, token, ttl)
	}, tallied[dlock.Record](b), nil)
	var recs []dlock.Record
	errs := make([]error, len(as))
	for i, a := range as {
		if errs[i] = a.err; a.err == nil {
			recs = append(recs, a.v)
		}
	}
	if err := b.tally(errs); err != nil {
		return dlock.Record{}, b.fail("refresh", key, err)
	}
	return merge(recs), nil
}

// Keep implements [dlock.Keeper]. A master that did not answer is asked
// again in the background (see keepLeg): left with the longer lease, it
// would hold the key past the minimum hold, and if it is the key's primary
// master, whose refusal a waiter's look takes as the answer, keep waiters
// from it until that lease ended.
func (b *Backend) Keep(ctx context.Context, key, token string, ttl time.Duration) error {
	until := time.Now().Add(ttl)
	late := func(i int, a answer[struct{}]) {
		if unconfirmed(a.err) {
			b.keepLeg(i, key, token, until)
		}
	}
	as := eachUntil(ctx, b, func(ctx context.Context, n *redislock.Backend) (struct{}, error) {
		return struct{}{}, n.Keep(ctx, key, token, ttl)
	}, tallied[struct{}](b), late)
	errs := errsOf(as)
	for i, err := range errs {
		if err != errPending && unconfirmed(err) {
			b.keepLeg(i, key, token, until)
		}
	}
	if err := b.tally(errs); err != nil {
		return b.fail("keep", key, err)
	}
	return nil
}

// keepLeg makes the keep of token on master i again, in the background,
// with backoff, while the master neither confirms nor refuses it, until
// Close or detach.RetryFor; the lease it sets still ends at until, and
// once until has passed it is released instead.
func (b *Backend) keepLeg(i int, key, token string, until time.Time) {
	b.retryLeg(leg{i, key, token}, time.Now().Add(detach.RetryFor), func(ctx context.Context, n *redislock.Backend) error {
		if rest := time.Until(until); rest >= time.Millisecond {
			return n.Keep(ctx, key, token, rest)
		}
		return b.release(ctx, n, key, token, true)
	}, nil)
}

// Release implements [dlock.Backend]: on every master; it fails when a
// quorum did not hold the lock. Unlike a grant it waits for every master
// (up to the master timeout), so that once it returns no share of the
// lease is left to refuse this process's next acquire of the key, which
// with one master down would be refused. A master that does not answer is
// asked again in the background (see releaseLater).
func (b *Backend) Release(ctx context.Context, key, token string) error {
	release := func(ctx context.Context, n *redislock.Backend) (struct{}, error) {
		return struct{}{}, b.release(ctx, n, key, token, true)
	}
	if !b.fifo {
		errs := errsOf(each(ctx, b, release))
		b.releaseLater(errs, key, token, true)
		if err := b.tally(errs); err != nil {
			return b.fail("release", key, err)
		}
		return nil
	}
	// With FIFO the other masters first: the next in line, woken by the
	// primary's release, then finds them free, rather than this lease
	// still on them, which looks like a holder with a quorum.
	p := b.primary(key)
	as := make([]answer[struct{}], len(b.nodes))
	eachOf(ctx, b, as, func(i int) bool { return i != p }, release)
	if testHookReleasePrimary != nil {
		testHookReleasePrimary()
	}
	eachOf(ctx, b, as, func(i int) bool { return i == p }, release)
	errs := errsOf(as)
	b.releaseLater(errs, key, token, true)
	if err := b.tally(errs); err != nil {
		return b.fail("release", key, err)
	}
	if errs[p] != nil {
		// The primary's release woke nobody: it did not hold the lease
		// (taken while it was down or after it lost its data), or did not
		// answer. Wake every waiter, as without FIFO: through the primary
		// if it answered, else through the others.
		answered := errors.Is(errs[p], dlock.ErrNotHeld)
		eachOf(context.WithoutCancel(ctx), b, make([]answer[struct{}], len(b.nodes)), func(i int) bool { return (i == p) == answered },
			func(ctx context.Context, n *redislock.Backend) (struct{}, error) { return struct{}{}, n.Wake(ctx, key) })
	}
	return nil
}

// tallied returns whether answers to a refresh or keep decide
// its outcome (see tally) whatever the masters still out say.
func tallied[T any](b *Backend) func([]answer[T]) bool {
	return func(as []answer[T]) bool {
		ok, notHeld, _ := count(errsOf(as))
		return ok >= b.quorum || notHeld > b.tolerated()
	}
}

// foundOn calls fn (an inspect or a break) on every master and returns
// the records they found and the errors of those that failed.
func (b *Backend) foundOn(ctx context.Context, fn func(context.Context, *redislock.Backend) (dlock.Record, bool, error)) (recs []dlock.Record, errs []error) {
	type found struct {
		rec dlock.Record
		ok  bool
	}
	as := each(ctx, b, func(ctx context.Context, n *redislock.Backend) (found, error) {
		rec, ok, err := fn(ctx, n)
		return found{rec, ok}, err
	})
	for _, a := range as {
		switch {
		case a.err != nil:
			errs = append(errs, a.err)
		case a.v.ok:
			recs = append(recs, a.v.rec)
		}
	}
	return recs, errs
}

// Inspect implements [dlock.Backend]: the lease a quorum of masters hold.
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	recs, errs := b.foundOn(ctx, func(ctx context.Context, n *redislock.Backend) (dlock.Record, bool, error) {
		return n.Inspect(ctx, key)
	})
	if held := quorumOf(recs, b.quorum); held != nil {
		return merge(held), true, nil
	}
	// Not held by a quorum that answered; the silent masters could make
	// one with the most named lease.
	if len(errs) > 0 && len(quorumOf(recs, 0))+len(errs) >= b.quorum {
		return dlock.Record{}, false, b.fail("inspect", key, errors.Join(errs...))
	}
	return dlock.Record{}, false, nil
}

// List implements [dlock.Lister]: the leases a quorum of masters hold. A
// master that does not answer fails it, since a lease it holds with one
// other would go unlisted.
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	as := each(ctx, b, func(ctx context.Context, n *redislock.Backend) ([]dlock.Record, error) {
		return n.List(ctx, prefix)
	})
	byKey := make(map[string][]dlock.Record)
	for _, a := range as {
		if a.err != nil {
			return nil, b.fail("list", prefix, a.err)
		}
		for _, r := range a.v {
			byKey[r.Key] = append(byKey[r.Key], r)
		}
	}
	var out []dlock.Record
	for _, recs := range byKey {
		if held := quorumOf(recs, b.quorum); held != nil {
			out = append(out, merge(held))
		}
	}
	slices.SortFunc(out, func(a, c dlock.Record) int { return cmp.Compare(a.Key, c.Key) })
	return out, nil
}

// Stats implements [dlock.StatsReporter]: Active counts the leases a
// quorum holds (as List shows them), Expired the expired records of the
// master that has the most (as Cleanup counts what it removes). A master
// that does not answer fails it, as it fails List.
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	live, err := b.List(ctx, "")
	if err != nil {
		return dlock.Stats{}, err
	}
	as := each(ctx, b, func(ctx context.Context, n *redislock.Backend) (dlock.Stats, error) { return n.Stats(ctx) })
	expired := 0
	for _, a := range as {
		if a.err != nil {
			return dlock.Stats{}, b.fail("stats", "", a.err)
		}
		expired = max(expired, a.v.Expired)
	}
	return dlock.Stats{Total: len(live) + expired, Active: len(live), Expired: expired}, nil
}

// Cleanup implements [dlock.Cleaner]: on every master. It returns the most
// records one master removed, since a lease has a record on each.
func (b *Backend) Cleanup(ctx context.Context) (int, error) {
	as := each(ctx, b, func(ctx context.Context, n *redislock.Backend) (int, error) { return n.Cleanup(ctx) })
	most := 0
	var errs []error
	for _, a := range as {
		if a.err != nil {
			errs = append(errs, a.err)
		}
		most = max(most, a.v)
	}
	if err := errors.Join(errs...); err != nil {
		return most, b.fail("cleanup", "", err)
	}
	return most, nil
}

// Break implements [dlock.Breaker]: on every master. The key is free once
// no quorum holds it, so up to the masters the quorum tolerates may fail.
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	recs, errs := b.foundOn(ctx, func(ctx context.Context, n *redislock.Backend) (dlock.Record, bool, error) {
		return n.Break(ctx, key)
	})
	if len(errs) > b.tolerated() {
		return dlock.Record{}, false, b.fail("break", key, errors.Join(errs...))
	}
	if len(recs) == 0 {
		return dlock.Record{}, false, nil
	}
	return mostNamed(recs), true, nil
}

// Subscribe implements [dlock.Notifier]: a release, break or cleanup on
// any master wakes the waiter. It fails when fewer than a quorum of
// masters can be watched.
func (b *Backend) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	type sub struct {
		ch     <-chan struct{}
		cancel func()
	}
	// The master timeout bounds the wait for a master to confirm; the
	// subscription itself lasts until cancel.
	as := each(ctx, b, func(ctx context.Context, n *redislock.Backend) (sub, error) {
		ch, cancel, err := n.Subscribe(ctx, key)
		return sub{ch, cancel}, err
	})
	out := make(chan struct{}, 1)
	stop := make(chan struct{})
	var cancels []func()
	var errs []error
	for _, a := range as {
		if a.err != nil {
			errs = append(errs, a.err)
			continue
		}
		cancels = append(cancels, a.v.cancel)
		// A wake-up pending from the start (the master could not tell
		// whether a release came since the refusal) is one look, however
		// many masters have one: forwarded one by one, they made two.
		select {
		case <-a.v.ch:
			select {
			case out <- struct{}{}:
			default:
			}
		default:
		}
		go func() {
			for {
				select {
				case <-a.v.ch:
					select {
					case out <- struct{}{}:
					default:
					}
				case <-stop:
					return
				}
			}
		}()
	}
	unwatch := b.watch(ctx)
	cancel := sync.OnceFunc(func() {
		close(stop)
		unwatch()
		for _, c := range cancels {
			c()
		}
	})
	if len(errs) > b.tolerated() {
		cancel()
		return nil, nil, b.fail("subscribe", key, errors.Join(errs...))
	}
	return out, cancel, nil
}

// fail wraps err with the operation and key, keeping what errors.Is tests
// (the masters' errors, joined).
func (b *Backend) fail(op, key string, err error) error {
	return fmt.Errorf("redlock: %s %q: %w", op, key, err)
}
