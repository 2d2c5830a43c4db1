package etcdlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
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

	mu    sync.Mutex
	rev   int64  // the ticket's create revision, 0 until it has one
	seen  int64  // revision of the last refusal
	first bool   // first in line at the last refusal
	ahead string // the ticket ahead at the last refusal, "" if not known
}

func (w *waiter) enqueued(rev int64) {
	w.mu.Lock()
	w.rev = rev
	w.mu.Unlock()
}

func (w *waiter) refusedAt(rev int64, first bool, ahead string) {
	w.mu.Lock()
	w.seen, w.first, w.ahead = rev, first, ahead
	w.mu.Unlock()
}

// place is where the last refusal left w: at revision seen, first in line
// or behind the ticket ahead ("" if not known).
func (w *waiter) place() (seen int64, first bool, ahead string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen, w.first, w.ahead
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

var errClosed = fmt.Errorf("%w: backend closed", dlock.ErrUnavailable)

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
	w = &waiter{key: req.Key, id: id, owner: req.Owner, ticket: b.queuePrefix(req.Key) + id}
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
// gave up. If the delete fails the ticket goes with the session lease.
func (b *Backend) dequeue(w *waiter) {
	if !b.forget(w) || w.ticketRev() == 0 {
		return
	}
	b.cleanup.Add(1)
	go func() {
		defer b.cleanup.Done()
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		defer cancel()
		_, _ = b.cli.Delete(ctx, w.ticket)
	}()
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
	defer b.mu.Unlock()
	if b.closed || b.sess != 0 { // closed or raced by another waiter
		b.revokeLater(resp.ID)
		if b.closed {
			return 0, errClosed
		}
		return b.sess, nil
	}
	kctx, stop := context.WithCancel(context.Background())
	alive, err := b.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		stop()
		b.revokeLater(resp.ID)
		return 0, err
	}
	b.sess, b.stopSess = resp.ID, stop
	b.cleanup.Add(1)
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
// ticket. A ticket that is gone (its session lease ended) is taken again,
// at the end of the line.
func (b *Backend) acquireQueued(ctx context.Context, req dlock.AcquireRequest, w *waiter, sent time.Time) (dlock.Record, bool, error) {
	lk, qp := b.lockKey(req.Key), b.queuePrefix(req.Key)
	read, err := b.cli.Txn(ctx).Then(
		clientv3.OpGet(lk),
		clientv3.OpGet(qp, clientv3.WithFirstCreate()...),
		clientv3.OpGet(w.ticket),
		clientv3.OpGet(qp, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(w.ticketRev()-1))...),
	).Commit()
	if err != nil {
		return dlock.Record{}, false, err
	}
	lock := read.Responses[0].GetResponseRange().Kvs
	head := read.Responses[1].GetResponseRange().Kvs
	mine := read.Responses[2].GetResponseRange().Kvs
	ahead := read.Responses[3].GetResponseRange().Kvs
	switch {
	case len(mine) == 0:
		return b.enqueue(ctx, req.Key, w)
	case len(lock) > 0 || string(head[0].Key) != w.ticket:
		rec, err := b.refused(ctx, req.Key, w, refusal{rev: read.Header.Revision, lock: lock, head: head, ahead: ahead})
		return rec, false, err
	}
	rev := mine[0].CreateRevision
	return b.grant(ctx, req, sent, w,
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(lk), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(w.ticket), "=", rev),
			clientv3.Compare(clientv3.CreateRevision(qp), ">", rev-1).WithPrefix(), // no older ticket
		},
		[]clientv3.Op{clientv3.OpDelete(w.ticket)},
		[]clientv3.Op{clientv3.OpGet(lk), clientv3.OpGet(qp, clientv3.WithFirstCreate()...)})
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
		b.watchLock(wctx, key, 0, notify)
	}()
	cancel := func() {
		stop()
		<-done
	}
	return changed, cancel, nil
}

// follow wakes w when it should look: once first in line, at every change
// of the lock key (a release, a break, the deletion when the holder's
// lease ends, a new lease, a new holder); before that, only when it becomes
// first in line while the key is free. It watches the ticket just ahead of
// w's until that is deleted (granted, given up, or its waiter's session
// ended), then reads which ticket is ahead now, and the lock. Every watch
// starts from the revision of the read that found what to watch, so no
// change in between is missed, and etcd's client resumes watches after a
// reconnection from the last revision seen.
func (b *Backend) follow(ctx context.Context, w *waiter, notify func()) {
	rev, first, ahead := w.place()
	for !first {
		if ahead != "" {
			if !b.waitDeleted(ctx, ahead, rev) {
				return
			}
		}
		qp := b.queuePrefix(w.key)
		resp, err := b.cli.Txn(ctx).Then(
			clientv3.OpGet(qp, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(w.ticketRev()-1))...),
			clientv3.OpGet(b.lockKey(w.key), clientv3.WithCountOnly()),
		).Commit()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			notify() // the waiter looks, and its timer remains
			if !sleepCtx(ctx, time.Second) {
				return
			}
			ahead = ""
			continue
		}
		rev = resp.Header.Revision
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			ahead = string(kvs[0].Key)
			continue
		}
		first = true
		if resp.Responses[1].GetResponseRange().Count == 0 {
			notify() // first in line, and the key is free
		}
	}
	b.watchLock(ctx, w.key, rev, notify)
}

// waitDeleted waits until key is deleted after revision rev. It reports
// false if ctx ended first.
func (b *Backend) waitDeleted(ctx context.Context, key string, rev int64) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range b.cli.Watch(wctx, key, clientv3.WithRev(rev+1), clientv3.WithFilterPut()) {
		if len(resp.Events) > 0 || resp.Err() != nil {
			return true // deleted, or the watch failed: look again
		}
	}
	return ctx.Err() == nil
}

// watchLock calls notify at every change of key's lock after revision rev
// (from now if rev is 0) until ctx ends.
func (b *Backend) watchLock(ctx context.Context, key string, rev int64, notify func()) {
	for ctx.Err() == nil {
		var opts []clientv3.OpOption
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		failed := false
		for resp := range b.cli.Watch(ctx, b.lockKey(key), opts...) {
			if err := resp.Err(); err != nil {
				// Compacted past rev, or cancelled by the server: look
				// again, and watch from now on.
				failed = true
				break
			}
			if len(resp.Events) > 0 {
				notify()
				rev = resp.Header.Revision
			}
		}
		if ctx.Err() != nil {
			return
		}
		notify()
		if !failed {
			return // the client was closed: the waiter's look will say so
		}
		rev = 0
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
