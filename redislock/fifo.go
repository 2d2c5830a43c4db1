package redislock

import (
	"context"
	"sync"

	"github.com/dlock-dev/dlock"
)

// fifoState is the Go side of FIFO order. The queue itself lives in Redis;
// here the backend remembers which tickets its waiters hold, so that a
// waiter that gives up leaves the queue at once instead of blocking it
// until its ticket lapses.
//
// The core marks the context of a waiting Acquire with the lock id it asks
// for ([dlock.WaitingLockID]); an Acquire call with that lock id comes
// from a waiter and joins the queue. Any other Acquire (a TryAcquire) only
// respects the queue. A ticket is dropped when it is granted, released
// (the core's cleanup after a failed acquire), or when the waiter's
// context ends.
type fifoState struct {
	mu      sync.Mutex
	tickets map[string]*ticket // by lock id
}

// ticket is a queue place held by one of this backend's waiters.
type ticket struct {
	q    *fifoState
	b    *Backend
	ctx  context.Context // the waiter's
	key  string
	id   string
	stop func() bool // stops the dequeue on context end
}

func (q *fifoState) init() {
	q.tickets = make(map[string]*ticket)
}

// waiting reports whether an Acquire with ctx for lock id comes from a
// waiter.
func waiting(ctx context.Context, id string) bool {
	w, ok := dlock.WaitingLockID(ctx)
	return ok && w == id
}

type noQueueKey struct{}

// WithoutQueue returns ctx for an Acquire that, with FIFO, must respect
// the queue but not take a place in it even if it comes from a waiter
// ([dlock.WaitingLockID]): package redlock queues its waiters on one
// master only, the key's primary, and asks the others with it.
func WithoutQueue(ctx context.Context) context.Context {
	return context.WithValue(ctx, noQueueKey{}, true)
}

// queues reports whether a waiter's Acquire with ctx takes a place in the
// FIFO queue (see WithoutQueue).
func queues(ctx context.Context) bool { return ctx.Value(noQueueKey{}) == nil }

type queueLifeKey struct{}

// WithQueueLife returns ctx for an Acquire whose FIFO ticket leaves the
// queue when life ends rather than ctx: package redlock bounds each call
// to a master by a context of its own, which ends with the call, while
// the ticket must stay as long as the waiter waits.
func WithQueueLife(ctx, life context.Context) context.Context {
	return context.WithValue(ctx, queueLifeKey{}, life)
}

// queueLife is the context whose end drops the ticket of an Acquire made
// with ctx (see WithQueueLife).
func queueLife(ctx context.Context) context.Context {
	if life, ok := ctx.Value(queueLifeKey{}).(context.Context); ok {
		return life
	}
	return ctx
}

// hold returns the ticket of req's token, arranging for it to leave the
// queue when ctx ends.
func (q *fifoState) hold(ctx context.Context, b *Backend, req dlock.AcquireRequest) *ticket {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t := q.tickets[req.LockID]; t != nil {
		return t
	}
	ctx = queueLife(ctx)
	t := &ticket{q: q, b: b, ctx: ctx, key: req.Key, id: req.LockID}
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
	var done func()
	if mine {
		delete(t.q.tickets, t.id)
		// Counted in the same critical section, so that Drain either
		// finds the ticket (dropEnded) or waits for this.
		done = t.b.running.Start()
	}
	t.q.mu.Unlock()
	if !mine {
		return
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), lateReleaseTimeout)
	defer cancel()
	n := t.b.names(t.key)
	// On failure the ticket lapses at its deadline.
	_, _ = t.b.script(ctx, scriptCall{script: dequeueScript, keys: n.dequeueKeys(), args: []any{t.id, n.channel}}, nil)
}

// dropEnded drops, counted by the backend's running group, the tickets
// whose waiter's context ended but whose dequeue has not started yet
// (context.AfterFunc runs it on a goroutine of its own, a moment later).
func (q *fifoState) dropEnded() {
	q.mu.Lock()
	var ended []*ticket
	for _, t := range q.tickets {
		if t.ctx.Err() != nil {
			ended = append(ended, t)
		}
	}
	q.mu.Unlock()
	for _, t := range ended {
		t.b.running.Go(t.dequeue)
	}
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
