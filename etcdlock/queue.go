package etcdlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-dev/dlock"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The queue. A waiting acquire that is refused takes a ticket: an etcd key
// under the lock's queue prefix, attached to its backend's session lease.
// Tickets are ordered by create revision, and a free key goes only to the
// oldest: the granting transaction checks that the waiter's ticket exists
// and that no ticket is older, and deletes the ticket as it writes the
// lock. A TryAcquire respects the queue without joining it.
//
// Each waiter watches one thing (see follow): the ticket just ahead of its
// own until that is deleted, and, once first in line, the lock key. So a
// release wakes one waiter in the whole cluster, and a waiter behind a
// dead one moves up when the dead one's session lease ends.

// queueTTL is the TTL of a backend's session lease, which its tickets are
// attached to and which it keeps alive while it lives: the longest a
// crashed waiter can hold up the queue.
const queueTTL = 5 * time.Second

// ticket is the value of a ticket key, for reports of a key that is free
// but promised to the first in line.
type ticket struct {
	LockID string      `json:"lock_id"`
	Owner  dlock.Owner `json:"owner,omitzero"`
}

func decodeTicket(key string, data []byte) (ticket, error) {
	var t ticket
	if err := json.Unmarshal(data, &t); err != nil || t.LockID == "" {
		return ticket{}, fmt.Errorf("%w: queue of %q holds a ticket that is not one (%q)", dlock.ErrCorrupt, key, data)
	}
	return t, nil
}

// waiter is the state of one waiting acquire of this backend, by lock id.
type waiter struct {
	key    string
	id     string
	owner  dlock.Owner
	ticket string      // its ticket's etcd key
	stop   func() bool // stops the dequeue at the end of the wait's context

	moved chan struct{} // a new ticket replaced a lost one
	free  atomic.Bool   // the subscription saw the key free, w first

	mu  sync.Mutex
	rev int64 // the ticket's create revision, 0 until it has one
	at  place // where the last refusal left it
}

// place is where a waiter stands, as a read at revision rev saw it: first
// in line or behind the ticket ahead, and whether the lock was held. known
// is false when the read did not look for the ticket ahead.
type place struct {
	rev   int64
	first bool
	ahead string
	held  bool
	known bool
}

func (w *waiter) enqueued(rev int64) {
	w.mu.Lock()
	again := w.rev != 0
	w.rev = rev
	w.mu.Unlock()
	if again {
		select {
		case w.moved <- struct{}{}:
		default:
		}
	}
}

func (w *waiter) refusedAt(p place) {
	w.mu.Lock()
	w.at = p
	w.mu.Unlock()
}

// sawFree notes, before a wake-up, that the key was free with w first.
func (w *waiter) sawFree() { w.free.Store(true) }

// takeFree reports (once) whether the last wake-up saw the key free with
// w first.
func (w *waiter) takeFree() bool { return w.free.Swap(false) }

func (w *waiter) place() place {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at
}

func (w *waiter) ticketRev() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rev
}

func (w *waiter) ticketValue() (string, error) {
	data, err := json.Marshal(ticket{LockID: w.id, Owner: w.owner})
	return string(data), err
}

var errClosed = fmt.Errorf("backend %w", dlock.ErrClosed)

// waiterFor reports whether ctx is a waiting acquire's, and returns the
// waiter state of req if so, creating it on the first attempt; its ticket
// leaves the queue when ctx ends. A closed backend has no waiters: it
// returns nil and true.
func (b *Backend) waiterFor(ctx context.Context, req dlock.AcquireRequest) (w *waiter, waiting bool) {
	id, ok := dlock.WaitingLockID(ctx)
	if !ok || id != req.LockID {
		return nil, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.waiters[id]; w != nil {
		return w, true
	}
	if b.closed {
		return nil, true
	}
	w = &waiter{key: req.Key, id: id, owner: req.Owner, ticket: b.queuePrefix(req.Key) + id, moved: make(chan struct{}, 1)}
	b.waiters[id] = w
	w.stop = context.AfterFunc(ctx, func() { b.dequeue(w) })
	return w, true
}

// waiter returns the waiter with lock id, nil if there is none.
func (b *Backend) waiter(id string) *waiter {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiters[id]
}

// forget drops w (granted: the grant deleted its ticket). Safe on nil.
func (b *Backend) forget(w *waiter) bool {
	if w == nil {
		return false
	}
	b.mu.Lock()
	mine := b.waiters[w.id] == w
	if mine {
		delete(b.waiters, w.id)
	}
	b.mu.Unlock()
	w.stop()
	return mine
}

// dequeue drops w and deletes its ticket, in the background: the waiter
// gave up. It deletes even when no attempt reported a ticket, since one
// whose answer was lost may have put it, and the session lease that would
// end it lives as long as the backend. If the delete fails the ticket goes
// with the session lease.
func (b *Backend) dequeue(w *waiter) {
	if !b.forget(w) {
		return
	}
	b.background(func(ctx context.Context) { _, _ = b.cli.Delete(ctx, w.ticket) })
}

// withSession runs put with the lease of this backend's session; if etcd
// no longer knows that lease (it ended before the keep-alive noticed), it
// drops it and runs put once more with a new one.
func (b *Backend) withSession(ctx context.Context, put func(sess clientv3.LeaseID) error) error {
	for try := 0; ; try++ {
		sess, err := b.session(ctx)
		if err != nil {
			return err
		}
		err = put(sess)
		if try > 0 || !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return err
		}
		b.dropSession(sess)
	}
}

// dropSession forgets the session lease id, which etcd no longer has.
func (b *Backend) dropSession(id clientv3.LeaseID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sess == id {
		b.stopSess()
		b.sess, b.stopSess = 0, nil
	}
}

// session returns the lease this backend's tickets are attached to,
// granting it and starting its keep-alive on first use. If the keep-alive
// ends (the lease expired while the process stalled or was cut off), the
// tickets are gone and the next one starts a new session.
func (b *Backend) session(ctx context.Context) (clientv3.LeaseID, error) {
	b.mu.Lock()
	id, closed := b.sess, b.closed
	b.mu.Unlock()
	switch {
	case closed:
		return 0, errClosed
	case id != 0:
		return id, nil
	}
	resp, err := b.cli.Grant(ctx, int64(queueTTL/time.Second))
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	if b.closed || b.sess != 0 { // closed or raced by another waiter
		closed, sess := b.closed, b.sess
		b.mu.Unlock()
		b.revokeLater(resp.ID)
		if closed {
			return 0, errClosed
		}
		return sess, nil
	}
	kctx, stop := context.WithCancel(context.Background())
	alive, err := b.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		b.mu.Unlock()
		stop()
		b.revokeLater(resp.ID)
		return 0, err
	}
	b.sess, b.stopSess = resp.ID, stop
	b.cleanup.Add(1) // under mu and not closed: Close has not begun to wait
	b.mu.Unlock()
	go func() {
		defer b.cleanup.Done()
		for range alive { // the client sends a renewal a third of the TTL in
		}
		stop()
		b.mu.Lock()
		if b.sess == resp.ID {
			b.sess, b.stopSess = 0, nil
		}
		b.mu.Unlock()
	}()
	return resp.ID, nil
}

// acquireQueued is a later attempt of a waiter with a ticket: a read of the
// lock, the head of the queue and the ticket, and, only if the key is free
// and the ticket first in line, the granting transaction, which deletes the
// ticket. When the subscription woke the waiter because it saw the key free
// with the waiter first, the read is skipped: the transaction checks the
// same, and reads the same if it fails. A ticket that is gone (its session
// lease ended) is taken again, at the end of the line.
func (b *Backend) acquireQueued(ctx context.Context, req dlock.AcquireRequest, w *waiter, sent time.Time) (dlock.Record, bool, error) {
	lk, qp, rev := b.lockKey(req.Key), b.queuePrefix(req.Key), w.ticketRev()
	reads := []clientv3.Op{
		clientv3.OpGet(lk),
		clientv3.OpGet(qp, clientv3.WithFirstCreate()...),
		clientv3.OpGet(w.ticket),
		lastBefore(qp, rev),
		clientv3.OpGet(b.promiseKey(req.Key)),
	}
	refusedBy := func(resp *clientv3.TxnResponse) (dlock.Record, bool, error) {
		rs := resp.Responses
		if len(rs[2].GetResponseRange().Kvs) == 0 {
			return b.enqueue(ctx, req.Key, w)
		}
		rec, err := b.refused(ctx, req.Key, w, refusal{
			rev:         resp.Header.Revision,
			lock:        rs[0].GetResponseRange().Kvs,
			head:        rs[1].GetResponseRange().Kvs,
			ahead:       rs[3].GetResponseRange().Kvs,
			promise:     rs[4].GetResponseRange().Kvs,
			lookedAhead: true,
		})
		return rec, false, err
	}
	if !w.takeFree() {
		read, err := b.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return dlock.Record{}, false, err
		}
		rs := read.Responses
		lock, head, mine := rs[0].GetResponseRange().Kvs, rs[1].GetResponseRange().Kvs, rs[2].GetResponseRange().Kvs
		if len(mine) > 0 && len(lock) == 0 && string(head[0].Key) != w.ticket {
			// Free, but promised to the first in line: pass it if the
			// promise has lapsed.
			rec, granted, err := b.pass(ctx, req, sent, rs[4].GetResponseRange().Kvs, w)
			if granted || err != nil {
				return rec, granted, err
			}
		}
		if len(mine) == 0 || len(lock) > 0 || string(head[0].Key) != w.ticket {
			return refusedBy(read)
		}
	}
	return b.grant(ctx, req, sent,
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(w.ticket), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(qp), ">", rev-1).WithPrefix(), // no older ticket
		},
		[]clientv3.Op{clientv3.OpDelete(w.ticket)},
		reads, refusedBy)
}

// Subscribe wakes a waiting acquire when it should look again (see
// follow). It must come after the waiter's first refusal, as the core
// makes it; any other caller gets a watch of the lock key and a value in
// the channel at once.
func (b *Backend) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	id, _ := dlock.WaitingLockID(ctx)
	w := b.waiter(id)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if w != nil && w.ticketRev() != 0 && w.key == key {
			b.follow(wctx, w, notify)
			return
		}
		notify()
		b.watchKey(wctx, key, notify)
	}()
	cancel := func() {
		stop()
		<-done
	}
	return changed, cancel, nil
}

// lastBefore reads the key of the youngest ticket of queue qp older than
// the ticket created at revision rev: the one ahead of it.
func lastBefore(qp string, rev int64) clientv3.Op {
	return clientv3.OpGet(qp, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1), clientv3.WithKeysOnly())...)
}

// follow wakes w when it should look: once first in line, at every change
// of the lock key (a release, a break, the deletion when the holder's
// lease ends, a new lease, a new holder), and when it becomes first in
// line while the key is free. Until then it watches only the ticket just
// ahead of w's, until that goes (granted, given up, or gone with its
// waiter's session), so a hand-over wakes the new first in line and the
// waiter behind it, not the whole queue.
//
// The first watch starts at the revision of the refusal that placed w, so
// nothing since is missed. etcd serves a watch that starts in the past
// from a catch-up loop that runs every 100ms until it has caught up, so
// later watches start from now instead, and a read made after the watch
// exists says whether what it watches is still there. (Starting the first
// one from now too would cost that read for every wait whose revision
// moved on before it subscribed, to save at most 100ms once per wait.)
func (b *Backend) follow(ctx context.Context, w *waiter, notify func()) {
	p := w.place()
	for ctx.Err() == nil {
		var ok bool
		if p.known {
			ok = b.watchPlace(ctx, w, p, notify)
		} else {
			ok = b.watchFromNow(ctx, w, notify)
		}
		if !ok && !sleepCtx(ctx, time.Second) {
			return
		}
		p = place{}
	}
}

// watchPlace waits at p, watching from just after p.rev: until the ticket
// ahead goes, or, first in line, for every change of the lock. It returns
// false if a watch failed (w was woken to look on its own), true when w
// moved.
func (b *Backend) watchPlace(ctx context.Context, w *waiter, p place, notify func()) bool {
	if !p.first {
		return b.waitGone(ctx, w, b.cli.Watch(ctx, p.ahead, clientv3.WithRev(p.rev+1), clientv3.WithFilterPut()), notify)
	}
	if !p.held {
		w.sawFree()
		notify()
	}
	return b.watchLock(ctx, w, b.cli.Watch(ctx, b.lockKey(w.key), clientv3.WithRev(p.rev+1)), notify)
}

// watchFromNow finds w's place with watches made before the reads that
// decide what they must catch.
func (b *Backend) watchFromNow(ctx context.Context, w *waiter, notify func()) bool {
	qp, lk := b.queuePrefix(w.key), b.lockKey(w.key)
	resp, err := b.cli.Txn(ctx).Then(lastBefore(qp, w.ticketRev()), clientv3.OpGet(w.ticket, clientv3.WithCountOnly())).Commit()
	if err != nil {
		notify()
		return false
	}
	if resp.Responses[1].GetResponseRange().Count == 0 {
		// The ticket is gone with its session: the waiter takes a new one
		// when it looks.
		notify()
		return waitMoved(ctx, w)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		ahead := string(kvs[0].Key)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		gone, err := b.watchNow(wctx, ahead, clientv3.WithFilterPut())
		if err != nil {
			notify()
			return false
		}
		still, err := b.cli.Get(ctx, ahead, clientv3.WithCountOnly())
		if err != nil {
			notify()
			return false
		}
		if still.Count == 0 {
			return true // gone already: look for the next one ahead
		}
		return b.waitGone(wctx, w, gone, notify)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := b.watchNow(wctx, lk)
	if err != nil {
		notify()
		return false
	}
	held, err := b.cli.Get(ctx, lk, clientv3.WithCountOnly())
	if err != nil {
		notify()
		return false
	}
	if held.Count == 0 {
		w.sawFree()
		notify()
	}
	return b.watchLock(wctx, w, changes, notify)
}

// watchNow makes a watch of key from now and waits until etcd has made it:
// every change after that is delivered.
func (b *Backend) watchNow(ctx context.Context, key string, opts ...clientv3.OpOption) (clientv3.WatchChan, error) {
	ch := b.cli.Watch(ctx, key, append(opts, clientv3.WithCreatedNotify())...)
	resp, ok := <-ch
	switch {
	case !ok:
		return nil, errors.New("watch closed")
	case resp.Err() != nil:
		return nil, resp.Err()
	}
	return ch, nil
}

// waitGone waits until the ticket ahead is deleted, as gone reports.
func (b *Backend) waitGone(ctx context.Context, w *waiter, gone clientv3.WatchChan, notify func()) bool {
	return onEvents(ctx, w, gone, notify, func([]*clientv3.Event) bool { return true })
}

// watchLock wakes w at every change of the lock, as changes reports.
func (b *Backend) watchLock(ctx context.Context, w *waiter, changes clientv3.WatchChan, notify func()) bool {
	return onEvents(ctx, w, changes, notify, func(evs []*clientv3.Event) bool {
		if evs[len(evs)-1].Type == mvccpb.DELETE {
			w.sawFree()
		}
		notify()
		return false
	})
}

// onEvents calls handle with the events of each response from ch until it
// returns true (then onEvents returns true) or w's ticket was replaced
// (true: w moved). A watch that failed wakes w and returns false, one that
// closed is handled by watchEnded.
func onEvents(ctx context.Context, w *waiter, ch clientv3.WatchChan, notify func(), handle func([]*clientv3.Event) bool) bool {
	for {
		select {
		case <-w.moved:
			return true
		case resp, ok := <-ch:
			switch {
			case !ok:
				return watchEnded(ctx, notify)
			case resp.Err() != nil:
				notify()
				return false
			case len(resp.Events) > 0 && handle(resp.Events):
				return true
			}
		}
	}
}

// watchEnded handles a watch channel that closed: ctx ended, or the client
// was closed, and then w's look will fail and end its wait.
func watchEnded(ctx context.Context, notify func()) bool {
	if ctx.Err() == nil {
		notify()
		<-ctx.Done()
	}
	return true
}

func waitMoved(ctx context.Context, w *waiter) bool {
	select {
	case <-w.moved:
	case <-ctx.Done():
	}
	return true
}

// watchKey calls notify at every change of key's lock from now until ctx
// ends: the subscription of a caller that is not a queued waiter.
func (b *Backend) watchKey(ctx context.Context, key string, notify func()) {
	for resp := range b.cli.Watch(ctx, b.lockKey(key)) {
		if len(resp.Events) > 0 || resp.Err() != nil {
			notify()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
