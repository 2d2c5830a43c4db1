package redislock

import (
	"context"
	"reflect"
	"slices"
	"sync"

	"github.com/dlock-dev/dlock"
)

// fifoState is the Go side of FIFO order. The queue itself lives in Redis;
// here the backend remembers which calls are waiting and which tickets its
// waiters hold, so that a waiter that gives up leaves the queue at once
// instead of blocking it until its ticket lapses.
//
// The core's wait loop knows nothing about tickets. It subscribes to the
// key and then calls Acquire, both with the same context, until it is
// granted or the context ends. So each subscription on (context, key)
// claims the first new token that Acquire sees with that context and key:
// that token's calls come from a waiter, which joins the queue. Any other
// Acquire (a TryAcquire) only respects the queue. A ticket is dropped when
// it is granted, released (the core's cleanup after a failed acquire), or
// when the waiter's context ends.
type fifoState struct {
	mu      sync.Mutex
	waits   map[waitKey][]*sub // live subscriptions
	tickets map[string]*ticket // by lock id
}

// sub is one live subscription; claimed once a token was tied to it.
type sub struct{ claimed bool }

type waitKey struct {
	ctx context.Context
	key string
}

// ticket is a queue place held by one of this backend's waiters.
type ticket struct {
	q    *fifoState
	b    *Backend
	key  string
	id   string
	stop func() bool // stops the dequeue on context end
}

func (q *fifoState) init() {
	q.waits = make(map[waitKey][]*sub)
	q.tickets = make(map[string]*ticket)
}

// comparable reports whether ctx can be a map key. Contexts are pointers
// in practice, but a caller's own context type might not be comparable.
func comparable(ctx context.Context) bool { return reflect.TypeOf(ctx).Comparable() }

// add records a subscription and returns it, for remove.
func (q *fifoState) add(ctx context.Context, key string) *sub {
	s := &sub{}
	if !comparable(ctx) {
		return s
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	k := waitKey{ctx, key}
	q.waits[k] = append(q.waits[k], s)
	return s
}

func (q *fifoState) remove(ctx context.Context, key string, s *sub) {
	if !comparable(ctx) {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	k := waitKey{ctx, key}
	q.waits[k] = slices.DeleteFunc(q.waits[k], func(x *sub) bool { return x == s })
	if len(q.waits[k]) == 0 {
		delete(q.waits, k)
	}
}

// waiting reports whether an Acquire of key with ctx and lock id comes from
// a waiter: its token already holds a ticket, or a subscription on (ctx,
// key) has not claimed a token yet and now claims this one.
func (q *fifoState) waiting(ctx context.Context, key, id string) bool {
	if !comparable(ctx) {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tickets[id] != nil {
		return true
	}
	for _, s := range q.waits[waitKey{ctx, key}] {
		if !s.claimed {
			s.claimed = true
			return true
		}
	}
	return false
}

// hold returns the ticket of req's token, arranging for it to leave the
// queue when ctx ends.
func (q *fifoState) hold(ctx context.Context, b *Backend, req dlock.AcquireRequest) *ticket {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t := q.tickets[req.LockID]; t != nil {
		return t
	}
	t := &ticket{q: q, b: b, key: req.Key, id: req.LockID}
	q.tickets[t.id] = t
	t.stop = context.AfterFunc(ctx, t.dequeue)
	return t
}

// granted forgets a ticket the script consumed with the grant. Safe on nil.
func (t *ticket) granted() {
	if t != nil {
		t.q.forget(t.id)
	}
}

// forget stops tracking the ticket of lock id.
func (q *fifoState) forget(id string) {
	q.mu.Lock()
	t := q.tickets[id]
	delete(q.tickets, id)
	q.mu.Unlock()
	if t != nil {
		t.stop()
	}
}

// dequeue removes the ticket from the queue after its waiter gave up.
func (t *ticket) dequeue() {
	t.q.mu.Lock()
	mine := t.q.tickets[t.id] == t
	if mine {
		delete(t.q.tickets, t.id)
	}
	t.q.mu.Unlock()
	if !mine {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lateReleaseTimeout)
	defer cancel()
	n := t.b.names(t.key)
	// On failure the ticket lapses at its deadline.
	_, _ = call(ctx, func(ctx context.Context) (reply, error) {
		return t.b.run(ctx, dequeueScript, n, t.id, n.channel)
	}, nil)
}

// close drops every ticket this backend holds.
func (q *fifoState) close() {
	q.mu.Lock()
	tickets := make([]*ticket, 0, len(q.tickets))
	for _, t := range q.tickets {
		tickets = append(tickets, t)
	}
	q.mu.Unlock()
	for _, t := range tickets {
		if t.stop() {
			t.dequeue()
		}
	}
}
