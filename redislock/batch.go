package redislock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock/internal/detach"
)

// Scripts of many concurrent callers share round trips. While fewer than
// maxInflight scripts or batches are in flight, a script goes out at once
// on the caller's goroutine (see call); beyond that it queues, and when a
// script in flight returns, everything queued goes out together as one
// pipeline, sent by a goroutine of its own, which goes on sending what
// queued meanwhile until the queue is empty. The system calls of a round
// trip cost the client and the server more CPU than a script does, so
// under heavy parallel load k scripts in one pipeline cost far less than k
// round trips; callers below maxInflight pay one mutex and nothing else.
//
// Each queued caller waits for its reply or its context, whichever comes
// first: a caller that gives up before its batch is sent leaves the queue
// and its script never runs; one that gives up while its batch is in
// flight is treated as in call (its late function gets a successful
// reply).

// scriptCall is one run of a script.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	// durable: with WithReplicas, a WAIT follows the script on its
	// connection, and the reply says how many replicas acknowledged it.
	durable bool
}

// queued is a script waiting for a batch, and then for its reply.
type queued struct {
	scriptCall
	ctx  context.Context
	late func(reply)
	done chan struct{} // closed when r and err are set
	r    reply
	err  error
	gone bool // the caller returned without the reply (guarded by batcher.mu)
}

// maxInflight is how many scripts or batches may be in flight at once
// before further scripts queue. Queueing at lower concurrency cost more in
// goroutine hand-offs than it saved (a limit of 1 took 4 workers on a
// 2-core VM from x0.68 to x0.51 of bsm/redislock); with 16 workers, 4 in
// flight beat 1, 2 and 8.
const maxInflight = 4

type batcher struct {
	rdb      redis.UniversalClient
	replicas replicaWait   // zero: no WAIT
	running  *detach.Group // counts senders and late functions

	mu       sync.Mutex
	inflight int // scripts or batches in flight
	queue    []*queued

	// onQueue, if set (tests), is called with the queue's length after a
	// script joins it.
	onQueue func(n int)
}

// do runs c and returns its parsed reply. direct and late are as for call.
func (q *batcher) do(ctx context.Context, direct bool, c scriptCall, late func(reply)) (reply, error) {
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	q.mu.Lock()
	if q.inflight >= maxInflight {
		w := &queued{scriptCall: c, ctx: ctx, late: late, done: make(chan struct{})}
		q.queue = append(q.queue, w)
		if q.onQueue != nil {
			q.onQueue(len(q.queue))
		}
		q.mu.Unlock()
		return q.wait(w)
	}
	q.inflight++
	q.mu.Unlock()
	var r reply
	var err error
	if onCallersGoroutine(ctx, direct) {
		// As call would, without the closure it allocates.
		r, err = q.run(ctx, c)
	} else {
		r, err = call(ctx, q.running, false, func(ctx context.Context) (reply, error) {
			return q.run(ctx, c)
		}, late)
	}
	q.next()
	return r, err
}

// next hands the scripts that queued meanwhile, if any, to a sender.
func (q *batcher) next() {
	if batch := q.take(); batch != nil {
		q.running.Go(func() { q.send(batch) })
	}
}

// take returns the queued scripts and empties the queue, or, when nothing
// is queued, gives up the caller's place in flight and returns nil.
func (q *batcher) take() []*queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.queue
	q.queue = nil
	if len(batch) == 0 { // a caller that left may leave it empty, not nil
		q.inflight--
		return nil
	}
	return batch
}

// send runs batch as one pipeline, and then what queued meanwhile, until
// nothing is queued.
func (q *batcher) send(batch []*queued) {
	for ; batch != nil; batch = q.take() {
		calls := make([]scriptCall, len(batch))
		for i, w := range batch {
			calls[i] = w.scriptCall
		}
		ctx, cancel := batchContext(batch)
		replies, errs := runPipelined(ctx, q.rdb, calls, q.replicas)
		cancel()
		for i, w := range batch {
			q.deliver(w, replies[i], errs[i])
		}
	}
}

func (q *batcher) deliver(w *queued, r reply, err error) {
	q.mu.Lock()
	gone := w.gone
	if !gone {
		w.r, w.err = r, err
		close(w.done)
	}
	q.mu.Unlock()
	if gone && err == nil && w.late != nil {
		// Not on this goroutine: late may run scripts, which would queue
		// behind the batch this goroutine is to send next.
		q.running.Go(func() { w.late(r) })
	}
}

// wait returns w's reply, or its context's error if that ends first.
func (q *batcher) wait(w *queued) (reply, error) {
	select {
	case <-w.done:
		return w.r, w.err
	case <-w.ctx.Done():
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	select {
	case <-w.done: // it finished meanwhile: use it
		return w.r, w.err
	default:
	}
	if i := slices.Index(q.queue, w); i >= 0 {
		q.queue = slices.Delete(q.queue, i, i+1) // never sent
	} else {
		w.gone = true
	}
	return reply{}, w.ctx.Err()
}

// batchContext is the context a batch is sent with: the values of its
// first caller's context (so that go-redis hooks, such as tracing, see the
// pipeline under that caller), the latest deadline of its callers, or none
// if one has none (the client's timeouts bound it), and no cancellation,
// since each caller stops waiting on its own.
func batchContext(batch []*queued) (context.Context, context.CancelFunc) {
	base := context.WithoutCancel(batch[0].ctx)
	var latest time.Time
	for _, w := range batch {
		d, ok := w.ctx.Deadline()
		if !ok {
			return base, func() {}
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(base, latest)
}

// run runs c on its own: as one command, or in a pipeline with the WAIT
// that must follow it on the same connection.
func (q *batcher) run(ctx context.Context, c scriptCall) (reply, error) {
	if c.durable && q.replicas.replicas > 0 {
		replies, errs := runPipelined(ctx, q.rdb, []scriptCall{c}, q.replicas)
		return replies[0], errs[0]
	}
	return runScript(ctx, q.rdb, c)
}

// runScript runs c on its own.
func runScript(ctx context.Context, rdb redis.UniversalClient, c scriptCall) (reply, error) {
	v, err := c.script.Run(ctx, rdb, c.keys, c.args...).Result()
	if err != nil {
		return reply{}, err
	}
	return parseReply(v, time.Now())
}

// runPipelined runs calls in one pipeline, one round trip, and returns
// each one's reply or error. With w, if a call is durable, a WAIT ends the
// pipeline and each durable call's reply counts the replicas that
// acknowledged it (a pipeline is one connection, and WAIT covers every
// write made before it on its connection). A script the server has not
// cached (NOSCRIPT) is run again with its source, which loads it.
func runPipelined(ctx context.Context, rdb redis.UniversalClient, calls []scriptCall, w replicaWait) ([]reply, []error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	var wait *redis.IntCmd
	if w.replicas > 0 && slices.ContainsFunc(calls, func(c scriptCall) bool { return c.durable }) {
		wait = w.cmd(ctx, pipe)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	now := time.Now()
	replies := make([]reply, len(calls))
	errs := make([]error, len(calls))
	for i, cmd := range cmds {
		c := calls[i]
		v, err := cmd.Result()
		acks := wait
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			v, acks, err = rerun(ctx, rdb, c, wait != nil && c.durable, w)
			now = time.Now()
		}
		if err == nil {
			replies[i], err = parseReply(v, now)
		}
		if err == nil && acks != nil && c.durable {
			replies[i].acked, err = acks.Val(), acks.Err()
			if err != nil {
				err = fmt.Errorf("wait for replicas: %w", err)
			}
		}
		errs[i] = err
	}
	return replies, errs
}

// rerun runs c with its script's source after a NOSCRIPT, with its own
// WAIT if it needs one.
func rerun(ctx context.Context, rdb redis.UniversalClient, c scriptCall, durable bool, w replicaWait) (any, *redis.IntCmd, error) {
	if !durable {
		v, err := c.script.Run(ctx, rdb, c.keys, c.args...).Result()
		return v, nil, err
	}
	pipe := rdb.Pipeline()
	cmd := c.script.Eval(ctx, pipe, c.keys, c.args...)
	wait := w.cmd(ctx, pipe)
	_, _ = pipe.Exec(ctx)
	v, err := cmd.Result()
	return v, wait, err
}

// replicaWait is how many replicas a durable write must reach, and for how
// long to wait for them (see WithReplicas).
type replicaWait struct {
	replicas int
	timeout  time.Duration
}

// cmd queues the WAIT on pipe, for no longer than ctx allows.
func (w replicaWait) cmd(ctx context.Context, pipe redis.Pipeliner) *redis.IntCmd {
	d := w.timeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	// WAIT 0 would wait forever.
	cmd := redis.NewIntCmd(ctx, "wait", w.replicas, max(d, time.Millisecond).Milliseconds())
	_ = pipe.Process(ctx, cmd)
	return cmd
}
