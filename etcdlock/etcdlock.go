package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is the prefix of every etcd key this backend writes unless
// [WithPrefix] sets another.
const DefaultPrefix = "dlock/"

// DefaultTimeout bounds each operation whose context has no earlier
// deadline unless [WithTimeout] sets another.
const DefaultTimeout = 5 * time.Second

// Option configures a [Backend].
type Option func(*options)

type options struct {
	prefix  string
	timeout time.Duration
	errs    []error
}

// WithPrefix sets the prefix of every etcd key this backend writes
// (default [DefaultPrefix]). Clients that share locks must use the same
// prefix; different prefixes are separate namespaces. End it with a
// separator such as '/' so that one prefix is never the start of another.
// An empty prefix makes [New] fail with [dlock.ErrInvalidOption]: the
// backend would then claim every key of the cluster as a lock.
func WithPrefix(p string) Option {
	return func(o *options) {
		if p == "" {
			o.errs = append(o.errs, errors.New("empty prefix"))
			return
		}
		o.prefix = p
	}
}

// WithTimeout bounds each operation whose context has no earlier deadline
// (default [DefaultTimeout]). The etcd client waits for a reachable member
// rather than failing at once, so without a bound an operation on a cluster
// that is down would wait forever; when the bound passes the operation fails
// with [dlock.ErrUnavailable]. A timeout that is not positive makes [New]
// fail with [dlock.ErrInvalidOption].
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.errs = append(o.errs, fmt.Errorf("timeout %v is not positive", d))
			return
		}
		o.timeout = d
	}
}

// Backend is a dlock backend over an etcd cluster. It is safe for
// concurrent use. See the package doc for how it stores leases.
type Backend struct {
	cli     *clientv3.Client
	prefix  string
	timeout time.Duration

	cleanup sync.WaitGroup // background revocations and dequeues
	grants  grants         // leases this backend granted, by token

	mu       sync.Mutex
	waiters  map[string]*waiter // by lock id: this backend's queued waiters
	sess     clientv3.LeaseID   // the lease of this backend's tickets, 0 if none
	stopSess func()             // stops the session's keep-alive
	closed   bool
}

// New returns a backend over cli, which stays the caller's: [Backend.Close]
// does not close it. Errors wrap [dlock.ErrInvalidOption].
func New(cli *clientv3.Client, opts ...Option) (*Backend, error) {
	o := options{prefix: DefaultPrefix, timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if cli == nil {
		o.errs = append(o.errs, errors.New("nil client"))
	}
	if err := errors.Join(o.errs...); err != nil {
		return nil, fmt.Errorf("etcdlock: %w: %w", dlock.ErrInvalidOption, err)
	}
	return &Backend{cli: cli, prefix: o.prefix, timeout: o.timeout, waiters: map[string]*waiter{}}, nil
}

// Close takes this backend's waiters out of the queues (it revokes the
// lease of their tickets) and waits for the revocations of unused leases
// it started in the background, each bounded by the timeout. It is safe
// to call while other calls are in flight. It does not
// close the etcd client. After Close, an Acquire that would wait fails with
// [dlock.ErrClosed] (which matches [dlock.ErrUnavailable]); other
// operations still work. Calls through a closed etcd client fail with
// ErrClosed too.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	sess, stop := b.sess, b.stopSess
	b.sess, b.stopSess = 0, nil
	b.mu.Unlock()
	if stop != nil {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		_, _ = b.cli.Revoke(ctx, sess)
		cancel()
	}
	b.cleanup.Wait()
	return nil
}

// The etcd keys of a lock: the lease itself, and the queue of its waiters,
// one ticket each. A dlock key has no control characters, so the NUL
// that ends the queue's prefix keeps one key's queue apart from another's.
func (b *Backend) lockKey(key string) string     { return b.prefix + "lock/" + key }
func (b *Backend) queuePrefix(key string) string { return b.prefix + "queue/" + key + "\x00" }
func (b *Backend) promiseKey(key string) string  { return b.prefix + "promise/" + key }

// call runs fn with ctx bounded by the backend's timeout and maps its
// error: the caller's own context error is returned as is (wrapped), the
// backend's timeout and transport failures wrap dlock.ErrUnavailable.
func (b *Backend) call(ctx context.Context, op, key string, fn func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	err := fn(cctx)
	if err == nil {
		return nil
	}
	return b.fail(ctx, op, key, err)
}

func (b *Backend) fail(ctx context.Context, op, key string, err error) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("etcdlock: %s %q: %w", op, key, context.Cause(ctx))
	case errors.Is(err, dlock.ErrCorrupt), errors.Is(err, dlock.ErrNotHeld), errors.Is(err, dlock.ErrUnavailable):
		return fmt.Errorf("etcdlock: %s %q: %w", op, key, err)
	case b.cli.Ctx().Err() != nil: // the client was closed
		return fmt.Errorf("etcdlock: %s %q: %w: %w", op, key, dlock.ErrClosed, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("etcdlock: %s %q: %w: no answer from etcd within %v", op, key, dlock.ErrUnavailable, b.timeout)
	}
	return fmt.Errorf("etcdlock: %s %q: %w: %w", op, key, dlock.ErrUnavailable, err)
}

// get reads key's lease, nil if the key is free.
func (b *Backend) get(ctx context.Context, key string) (*grant, error) {
	resp, err := b.cli.Get(ctx, b.lockKey(key))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, err
	}
	return decodeGrant(key, resp.Kvs[0])
}

// withExpiry sets g's expiry from its lease's remaining time to live, as
// etcd's leader counts it, and reports whether the lease is still live. A
// lease etcd has expired may keep its key a moment longer, until the
// deletion is committed: it is not live.
func (b *Backend) withExpiry(ctx context.Context, g *grant) (live bool, err error) {
	asked := time.Now()
	resp, err := b.cli.TimeToLive(ctx, clientv3.LeaseID(g.lease))
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		g.expiresAt = asked
		return false, nil
	case err != nil:
		return false, err
	case resp.TTL < 0:
		g.expiresAt = asked
		return false, nil
	}
	// etcd truncates the remaining time to whole seconds: the lease ends
	// in under TTL+1 seconds. The later bound never frees a key early.
	g.expiresAt = asked.Add(time.Duration(resp.TTL+1) * time.Second)
	return true, nil
}

// Acquire grants req.Key if no lease holds it and no waiter is queued for
// it: it attaches the lock's etcd key to a new etcd lease of req.TTL
// rounded up to whole seconds, in a transaction that writes it only if the
// key does not exist and the key's queue is empty. The fence is the key's
// create revision. A waiting acquire (see [dlock.WaitingLockID]) that is
// refused joins the queue in the same transaction, and is granted later
// only when it is first in line (see queue.go).
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	sent := time.Now()
	w, waiting := b.waiterFor(ctx, req)
	var (
		rec     dlock.Record
		granted bool
	)
	err := b.call(ctx, "acquire", req.Key, func(ctx context.Context) error {
		var err error
		switch {
		case w != nil && w.ticketRev() != 0:
			rec, granted, err = b.acquireQueued(ctx, req, w, sent)
		default:
			rec, granted, err = b.acquireFirst(ctx, req, w, sent)
		}
		if err == nil && !granted && waiting && w == nil {
			return errClosed // a closed backend cannot queue
		}
		return err
	})
	if granted {
		b.forget(w)
	}
	if err != nil {
		return dlock.Record{}, false, err
	}
	return rec, granted, nil
}

// newValue is what a grant of req stores.
func newValue(req dlock.AcquireRequest, sent time.Time) value {
	return value{
		Version:     formatVersion,
		Key:         req.Key,
		LockID:      req.LockID,
		TokenSHA256: tokenHash(req.Token),
		AcquiredAt:  sent,
		LeaseTTL:    leaseSeconds(req.TTL),
		Owner:       req.Owner,
	}
}

// acquireFirst is the first attempt of an acquire. It looks first, so
// that a refused TryAcquire writes nothing and a refused waiter writes only
// its ticket (etcd writes go through Raft and to disk; reads are cheap).
// If the key is free and nobody queues for it, it is granted; if not, a
// waiter w (nil for a TryAcquire) joins the queue.
func (b *Backend) acquireFirst(ctx context.Context, req dlock.AcquireRequest, w *waiter, sent time.Time) (dlock.Record, bool, error) {
	lk, qp := b.lockKey(req.Key), b.queuePrefix(req.Key)
	reads := []clientv3.Op{clientv3.OpGet(lk), clientv3.OpGet(qp, clientv3.WithFirstCreate()...), clientv3.OpGet(b.promiseKey(req.Key))}
	look, err := b.cli.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return dlock.Record{}, false, err
	}
	rs := look.Responses
	seen := refusal{rev: look.Header.Revision, lock: rs[0].GetResponseRange().Kvs, head: rs[1].GetResponseRange().Kvs, promise: rs[2].GetResponseRange().Kvs}
	if len(seen.lock) == 0 && len(seen.head) > 0 {
		// Free, but promised to the first in line: take it if the promise
		// has lapsed.
		rec, granted, err := b.pass(ctx, req, sent, seen.promise, nil)
		if granted || err != nil {
			return rec, granted, err
		}
	}
	switch {
	case len(seen.lock) > 0 || len(seen.head) > 0:
		if w != nil {
			return b.enqueue(ctx, req.Key, w)
		}
		rec, err := b.refused(ctx, req.Key, nil, seen)
		return rec, false, err
	case w == nil:
		return b.grant(ctx, req, sent, freeAndNoQueue(lk, qp), nil, reads, func(resp *clientv3.TxnResponse) (dlock.Record, bool, error) {
			rs := resp.Responses
			rec, err := b.refused(ctx, req.Key, nil, refusal{rev: resp.Header.Revision, lock: rs[0].GetResponseRange().Kvs, head: rs[1].GetResponseRange().Kvs, promise: rs[2].GetResponseRange().Kvs})
			return rec, false, err
		})
	}
	// Free: try to take it, and if someone came first, queue in the same
	// transaction.
	t, err := w.ticketValue()
	if err != nil {
		return dlock.Record{}, false, err
	}
	var (
		rec     dlock.Record
		granted bool
	)
	err = b.withSession(ctx, func(sess clientv3.LeaseID) error {
		var err error
		rec, granted, err = b.grant(ctx, req, sent, freeAndNoQueue(lk, qp), nil, joinOps(lk, qp, w.ticket, t, sess), func(resp *clientv3.TxnResponse) (dlock.Record, bool, error) {
			return b.joined(ctx, req.Key, w, resp)
		})
		return err
	})
	return rec, granted, err
}

// freeAndNoQueue holds if the lock key lk does not exist and its queue qp
// is empty.
func freeAndNoQueue(lk, qp string) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(qp), "=", 0).WithPrefix(),
	}
}

// joinOps read the lock key lk, the head of its queue qp and its last
// ticket, and then put ticket: the last ticket before the put is the one
// ahead of it.
func joinOps(lk, qp, ticket, value string, sess clientv3.LeaseID) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(lk),
		clientv3.OpGet(qp, clientv3.WithFirstCreate()...),
		clientv3.OpGet(qp, append(clientv3.WithLastCreate(), clientv3.WithKeysOnly())...),
		clientv3.OpPut(ticket, value, clientv3.WithLease(sess)),
	}
}

// enqueue puts w's ticket at the end of key's queue, and reports the
// refusal it read in the same transaction.
func (b *Backend) enqueue(ctx context.Context, key string, w *waiter) (dlock.Record, bool, error) {
	t, err := w.ticketValue()
	if err != nil {
		return dlock.Record{}, false, err
	}
	var resp *clientv3.TxnResponse
	err = b.withSession(ctx, func(sess clientv3.LeaseID) error {
		var err error
		resp, err = b.cli.Txn(ctx).Then(joinOps(b.lockKey(key), b.queuePrefix(key), w.ticket, t, sess)...).Commit()
		return err
	})
	if err != nil {
		return dlock.Record{}, false, err
	}
	return b.joined(ctx, key, w, resp)
}

// joined reports the refusal of a transaction that ran joinOps.
func (b *Backend) joined(ctx context.Context, key string, w *waiter, resp *clientv3.TxnResponse) (dlock.Record, bool, error) {
	w.enqueued(resp.Header.Revision) // the ticket's put is the transaction's revision
	rs := resp.Responses
	rec, err := b.refused(ctx, key, w, refusal{
		rev:         resp.Header.Revision,
		lock:        rs[0].GetResponseRange().Kvs,
		head:        rs[1].GetResponseRange().Kvs,
		ahead:       rs[2].GetResponseRange().Kvs,
		lookedAhead: true,
		joined:      true,
	})
	return rec, false, err
}

// grant runs the granting transaction: if every cmp holds, the lock key is
// written on a new lease (and the ops in also run); else the ops in
// otherwise run, the lease is given back, and refusedBy reports the
// refusal from their results.
func (b *Backend) grant(ctx context.Context, req dlock.AcquireRequest, sent time.Time, cmps []clientv3.Cmp, also, otherwise []clientv3.Op,
	refusedBy func(*clientv3.TxnResponse) (dlock.Record, bool, error)) (dlock.Record, bool, error) {
	v := newValue(req, sent)
	data, err := v.encode()
	if err != nil {
		return dlock.Record{}, false, err
	}
	lease, err := b.cli.Grant(ctx, v.LeaseTTL)
	if err != nil {
		return dlock.Record{}, false, err
	}
	lk := b.lockKey(req.Key)
	// A grant ends the key's free spell, and with it any promise to the
	// first in line (see pass).
	then := append([]clientv3.Op{clientv3.OpPut(lk, data, clientv3.WithLease(lease.ID)), clientv3.OpDelete(b.promiseKey(req.Key))}, also...)
	resp, err := b.cli.Txn(ctx).If(cmps...).Then(then...).Else(otherwise...).Commit()
	if err != nil {
		// The transaction may have landed: the lease goes, and with it the
		// key if it was written. (A ticket it may have written goes when
		// the waiter gives up: see waiter.)
		b.revokeLater(lease.ID)
		return dlock.Record{}, false, err
	}
	if !resp.Succeeded {
		b.revokeLater(lease.ID)
		return refusedBy(resp)
	}
	g := grant{value: v, lease: int64(lease.ID), createRev: resp.Header.Revision}
	g.expiresAt = sent.Add(time.Duration(lease.TTL) * time.Second)
	b.grants.put(req.Token, g)
	return g.record(), true, nil
}

// refusal is what a refused attempt read, at revision rev: the lock key,
// the first ticket of its queue, and, if lookedAhead, the ticket ahead of
// the waiter's (none if it is first). joined says that the attempt put the
// waiter's ticket after reading head (so an empty head means that it is
// first).
type refusal struct {
	rev               int64
	lock, head, ahead []*mvccpb.KeyValue
	promise           []*mvccpb.KeyValue // read where the key may be free but promised
	lookedAhead       bool
	joined            bool
}

// refused builds the record of a refused acquire from what the refusal
// read: the holder, or, if the key is free but promised, the first waiter
// in line (without an expiry: it holds nothing yet). For a waiter w it also
// notes its place, for its subscription, and sets NextLook: the
// subscription wakes w when the key changes (first in line) or when w
// becomes first in line, so the looks the core makes on its own are only
// a safety net. The one at the holder's expiry comes a second late: etcd
// deletes the key a moment after the lease ends, and would otherwise be
// looked at again and again. A waiter behind others is not told the
// holder's expiry: it will not look at it, and asking etcd costs a request.
func (b *Backend) refused(ctx context.Context, key string, w *waiter, r refusal) (dlock.Record, error) {
	lock, head := r.lock, r.head
	first := w != nil && ((r.joined && len(head) == 0) || (len(head) > 0 && string(head[0].Key) == w.ticket))
	var rec dlock.Record
	switch {
	case len(lock) > 0:
		holder, err := decodeGrant(key, lock[0])
		if err != nil {
			return dlock.Record{}, err
		}
		if w == nil || first {
			if _, err := b.withExpiry(ctx, holder); err != nil {
				return dlock.Record{}, err
			}
		}
		rec = holder.record()
	case len(head) > 0:
		t, err := decodeTicket(key, head[0].Value)
		if err != nil {
			return dlock.Record{}, err
		}
		// Promised to t until the promise lapses (see pass).
		rec = dlock.Record{Key: key, LockID: t.LockID, Owner: t.Owner, ExpiresAt: promiseDeadline(r.promise)}
		if len(r.promise) == 0 {
			rec.ExpiresAt = time.Now().Add(passGrace) // about: the promise is made now
		}
	default:
		// Free and nobody in line: the state changed after a read.
		rec = dlock.Record{Key: key, ExpiresAt: time.Now()}
	}
	if w != nil {
		p := place{rev: r.rev, first: first, held: len(lock) > 0, known: first}
		if r.lookedAhead && !first && len(r.ahead) > 0 {
			p.ahead, p.known = string(r.ahead[0].Key), true
		}
		w.refusedAt(p)
		switch {
		case !first && len(lock) == 0 && !rec.ExpiresAt.IsZero():
			rec.NextLook = rec.ExpiresAt // then it may pass the first in line
		case !first:
			rec.NextLook = time.Now().Add(10 * queueTTL)
		case len(lock) > 0:
			rec.NextLook = rec.ExpiresAt.Add(time.Second)
		default:
			rec.NextLook = time.Now()
		}
	}
	return rec, nil
}

// passGrace is how long a key may stay free, promised to the first in
// line, before others may take it. A first in line that does not come (its
// waits keep ending before its wake-up arrives, or its process is stuck
// while its session lease lives) holds the key up this long at most.
const passGrace = 2 * time.Second

// pass takes req.Key if it is free but promised to the first in line and
// the promise has lapsed. The promise is an etcd key, read as promise: the
// first attempt to find the key so makes it (on its session lease, so that
// it goes with its backend), saying when it lapses, and every grant
// deletes it. Clocks of different clients may disagree about that moment:
// it bounds a wait, it guards nothing. w, if not nil, is a queued waiter
// passing the first in line: its ticket goes with the grant. granted=false
// with a nil error means the key may not be passed yet, or changed first.
func (b *Backend) pass(ctx context.Context, req dlock.AcquireRequest, sent time.Time, promise []*mvccpb.KeyValue, w *waiter) (dlock.Record, bool, error) {
	pk, lk := b.promiseKey(req.Key), b.lockKey(req.Key)
	if len(promise) == 0 {
		// Best effort: without it the key waits for its first in line,
		// as before there was one.
		_ = b.withSession(ctx, func(sess clientv3.LeaseID) error {
			_, err := b.cli.Txn(ctx).If(
				clientv3.Compare(clientv3.CreateRevision(pk), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			).Then(clientv3.OpPut(pk, strconv.FormatInt(time.Now().Add(passGrace).UnixNano(), 10), clientv3.WithLease(sess))).Commit()
			return err
		})
		return dlock.Record{}, false, nil
	}
	if time.Now().Before(promiseDeadline(promise)) {
		return dlock.Record{}, false, nil
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
		clientv3.Compare(clientv3.ModRevision(pk), "=", promise[0].ModRevision),
	}
	var also []clientv3.Op
	if w != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(w.ticket), "=", w.ticketRev()))
		also = append(also, clientv3.OpDelete(w.ticket))
	}
	return b.grant(ctx, req, sent, cmps, also, nil, func(*clientv3.TxnResponse) (dlock.Record, bool, error) {
		return dlock.Record{}, false, nil
	})
}

// promiseDeadline is when the promise read as kvs lapses; the zero time
// if there is none, and the far past if it does not parse (a promise that
// cannot be read holds nobody up).
func promiseDeadline(kvs []*mvccpb.KeyValue) time.Time {
	if len(kvs) == 0 {
		return time.Time{}
	}
	ns, err := strconv.ParseInt(string(kvs[0].Value), 10, 64)
	if err != nil {
		return time.Unix(0, 0)
	}
	return time.Unix(0, ns)
}

// revokeLater revokes a lease no grant uses, in the background: the caller
// does not wait for it, and if it fails the lease ends at its TTL anyway.
func (b *Backend) revokeLater(id clientv3.LeaseID) {
	b.background(func(ctx context.Context) { _, _ = b.cli.Revoke(ctx, id) })
}

// background runs f on a goroutine of its own with a context bounded by the
// timeout. Close waits for it, unless the backend was closed already: then
// nothing does (a WaitGroup must not gain work while it is being waited
// for), and f ends within the timeout anyway.
func (b *Backend) background(f func(ctx context.Context)) {
	b.mu.Lock()
	tracked := !b.closed
	if tracked {
		b.cleanup.Add(1)
	}
	b.mu.Unlock()
	go func() {
		if tracked {
			defer b.cleanup.Done()
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		f(ctx)
	}()
}

// owned reads key and checks that token holds it.
func (b *Backend) owned(ctx context.Context, key, token string) (*grant, error) {
	g, err := b.get(ctx, key)
	switch {
	case err != nil:
		return nil, err
	case g == nil || !g.holds(token):
		return nil, dlock.ErrNotHeld
	}
	return g, nil
}

// Refresh renews token's lease on key for ttl from now. If ttl rounds to
// the number of seconds the lease was granted with, it is one keep-alive of
// the lease (after a read of the key unless this backend granted it);
// otherwise the key moves to a new lease of the new length (the fence, its
// create revision, stays).
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	sent := time.Now()
	secs := leaseSeconds(ttl)
	var rec dlock.Record
	err := b.call(ctx, "refresh", key, func(ctx context.Context) error {
		if g, ok := b.grants.get(token, key); ok && g.LeaseTTL == secs {
			err := b.keepAlive(ctx, &g, sent, &rec)
			if !errors.Is(err, dlock.ErrNotHeld) {
				return err
			}
			b.grants.drop(token) // gone, or moved: read the key
		}
		g, err := b.owned(ctx, key, token)
		if err != nil {
			return err
		}
		if secs != g.LeaseTTL {
			return b.move(ctx, token, g, secs, sent, &rec)
		}
		return b.keepAlive(ctx, g, sent, &rec)
	})
	return rec, err
}

// keepAlive renews g's lease once.
func (b *Backend) keepAlive(ctx context.Context, g *grant, sent time.Time, rec *dlock.Record) error {
	resp, err := b.cli.KeepAliveOnce(ctx, clientv3.LeaseID(g.lease))
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return dlock.ErrNotHeld // expired, released or broken
	case err != nil:
		return err
	}
	g.expiresAt = sent.Add(time.Duration(resp.TTL) * time.Second)
	*rec = g.record()
	return nil
}

// move attaches g's key to a new lease of secs seconds, if it is still on
// g's lease, and then revokes the old lease: etcd cannot change a lease's
// TTL. The revocation is waited for, so that once the move has returned, no
// keep-alive of the old lease can succeed.
func (b *Backend) move(ctx context.Context, token string, g *grant, secs int64, sent time.Time, rec *dlock.Record) error {
	v := g.value
	v.LeaseTTL = secs
	data, err := v.encode()
	if err != nil {
		return err
	}
	lease, err := b.cli.Grant(ctx, secs)
	if err != nil {
		return err
	}
	k := b.lockKey(g.Key)
	resp, err := b.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(k), "=", g.lease),
			clientv3.Compare(clientv3.CreateRevision(k), "=", g.createRev)).
		Then(clientv3.OpPut(k, data, clientv3.WithLease(lease.ID))).
		Commit()
	switch {
	case err != nil:
		b.revokeLater(lease.ID)
		return err
	case !resp.Succeeded:
		b.revokeLater(lease.ID)
		return dlock.ErrNotHeld
	}
	old := clientv3.LeaseID(g.lease)
	g.value, g.lease = v, int64(lease.ID)
	g.expiresAt = sent.Add(time.Duration(lease.TTL) * time.Second)
	b.grants.update(token, *g)
	*rec = g.record()
	if _, err := b.cli.Revoke(ctx, old); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		b.revokeLater(old)
	}
	return nil
}

// Release frees key if token holds it, by revoking the key's lease: etcd
// deletes the key with it, in one step. A waiter of this backend with
// token's lock id leaves the key's queue (the core releases the token of
// an acquire that failed).
func (b *Backend) Release(ctx context.Context, key, token string) error {
	if w := b.waiter(dlock.LockID(token)); w != nil {
		b.dequeue(w)
	}
	return b.call(ctx, "release", key, func(ctx context.Context) error {
		if g, ok := b.grants.get(token, key); ok {
			err := b.revoke(ctx, &g)
			if !errors.Is(err, dlock.ErrNotHeld) {
				if err == nil {
					b.grants.drop(token)
				}
				return err
			}
			b.grants.drop(token) // gone, or moved: read the key
		}
		g, err := b.owned(ctx, key, token)
		if err != nil {
			return err
		}
		return b.revoke(ctx, g)
	})
}

// revoke revokes g's lease and so deletes g's key, unless the key has moved
// to another lease meanwhile (a refresh with a new TTL) or is gone.
func (b *Backend) revoke(ctx context.Context, g *grant) error {
	_, err := b.cli.Revoke(ctx, clientv3.LeaseID(g.lease))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return dlock.ErrNotHeld // expired or revoked since the read
	}
	return err
}

// Inspect returns key's live lease, with its expiry as etcd's leader counts
// it (whole seconds).
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	var (
		rec   dlock.Record
		found bool
	)
	err := b.call(ctx, "inspect", key, func(ctx context.Context) error {
		g, err := b.get(ctx, key)
		if err != nil || g == nil {
			return err
		}
		live, err := b.withExpiry(ctx, g)
		if err != nil || !live {
			return err
		}
		rec, found = g.record(), true
		return nil
	})
	return rec, found, err
}
