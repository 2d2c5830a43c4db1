package redislock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
)

// errClosed is returned by Subscribe after Close.
var errClosed = fmt.Errorf("redislock: backend %w", dlock.ErrClosed)

const (
	// subscribeTimeout bounds the wait for the server to confirm a
	// SUBSCRIBE when the caller's context has no earlier deadline.
	subscribeTimeout = 10 * time.Second
	// idlePing is how long the pub/sub connection may be silent before it
	// is pinged, so that a dead connection is noticed and replaced.
	idlePing = 30 * time.Second
	// maxBackoff caps the pause between reconnect attempts.
	maxBackoff = time.Second
)

// notifier multiplexes every key the Backend's waiters watch over one
// go-redis PubSub (one connection): SUBSCRIBE when a key gets its first
// waiter, UNSUBSCRIBE when its last leaves. One goroutine reads the
// connection and wakes waiters of the channel a message names.
//
// A release frees the key for one waiter, so a message wakes one waiter
// of this process, not all of them (each would cost a round trip and all
// but one would lose): the waiters take turns in subscription order. The
// woken waiter holds the baton until it leaves; if it leaves (granted,
// given up or failed), the next waiter is woken in its place, so a wake-up
// is never lost with a waiter that did not use it. With FIFO, a release
// names the lock id of the queue's head and only the waiter holding that
// ticket is woken, in whichever process it waits; a grant from the queue
// announces itself, and every process that saw the release but not the
// grant within a little more than the grace wakes its waiters to look
// again, since the head may have died. The announcement also names the
// next in line, whose process wakes it when the new lease would end, in
// case the holder dies without releasing (see wake). So with FIFO only the
// next in line ever looks at a held key, once per lease it sees end.
//
// go-redis reconnects and resubscribes by itself after a network error.
// Messages published meanwhile are lost, so every waiter is woken then (a
// spurious wake-up costs one acquire attempt); the core also wakes waiters
// at the holder's expiry, whatever happens here.
type notifier struct {
	rdb   redis.UniversalClient
	fifo  bool          // messages without a head wake every waiter (see wake)
	grace time.Duration // FIFO: how long a named head has to come

	mu     sync.Mutex
	ps     *redis.PubSub // nil until the first Subscribe
	chans  map[string]*channelState
	closed bool
	stop   chan struct{} // closed by close: the goroutines exit

	// SUBSCRIBE and UNSUBSCRIBE are queued under mu, in the order of the
	// state changes, and sent by one writer goroutine: a write may block
	// (dial, slow server) for longer than any caller's deadline.
	ops     []wireOp
	opReady chan struct{} // capacity 1: ops is not empty
}

// channelState tracks one channel. A SUBSCRIBE is confirmed by a reply on
// the connection; a waiter may only rely on notifications once the server
// confirmed, so ready is closed when the replies to every SUBSCRIBE sent so
// far have arrived.
type channelState struct {
	waiters    []*waiter // in turn order: the next to wake is first
	baton      *waiter   // woken by the latest message, still subscribed
	subscribed bool      // SUBSCRIBE sent and not followed by UNSUBSCRIBE
	pending    int       // subscribe replies still to come
	ready      chan struct{}
	fail       *subscribeFailure // of the latest SUBSCRIBE

	// FIFO: fallback wakes everyone unless the head came first; grants
	// counts the grants announced on the channel. watch wakes, when the
	// lease a waiter was told of ends, with FIFO the next in line if it
	// waits here, without it the waiter whose turn it is (watchExpiry).
	fallback alarm
	grants   uint64
	watch    alarm

	// A waiter subscribes after its first refusal (see Backend.Subscribe).
	// events counts what may make a waiter that was not yet registered
	// miss a wake-up: a message for whoever waits, a lost connection, an
	// UNSUBSCRIBE. A FIFO message that names one waiter (the head, the
	// next in line) concerns that one alone: named records the count of
	// messages, msgs, when each lock id was last named. refusals holds,
	// per lock id refused while the subscription was live, what had been
	// heard before that attempt: if the waiter was not named since, and
	// events are unchanged when it subscribes, it missed nothing and need
	// not look again at once.
	events   uint64
	msgs     uint64
	named    map[string]uint64
	refusals map[string]heard
}

// maxNamedIDs bounds channelState.named: ids of waiters in other processes
// are named too. Forgetting them counts as an event.
const maxNamedIDs = 256

// live reports whether the server has confirmed the subscription and none
// is pending: a message published now reaches this process.
func (st *channelState) live() bool { return st.subscribed && st.pending == 0 }

// missed reports, as the waiter with lock id subscribes, whether a release
// may have come unheard by it since its refusal: unless the subscription
// was live before the refusal and still is, with nothing heard in between.
// It forgets the refusal. Callers hold n.mu.
func (st *channelState) missed(id string) bool {
	h, ok := st.refusals[id]
	named, was := st.named[id]
	delete(st.refusals, id)
	delete(st.named, id)
	return !ok || h.events != st.events || (was && named > h.msgs) || !st.live()
}

// name notes a message naming the waiter with lock id id. Callers hold
// n.mu.
func (st *channelState) name(id string) {
	if id == "" {
		return
	}
	if len(st.named) >= maxNamedIDs {
		clear(st.named)
		st.events++
	}
	if st.named == nil {
		st.named = make(map[string]uint64)
	}
	st.named[id] = st.msgs
}

// alarm runs a function at a set time unless stopped or set again first.
type alarm struct {
	t  *time.Timer
	at time.Time // zero when nothing is pending
}

// set arms a to run fire at at, with n.mu held, if st is still channel's
// state then. Callers hold n.mu.
func (n *notifier) set(a *alarm, channel string, st *channelState, at time.Time, fire func()) {
	a.stop()
	a.at = at
	a.t = time.AfterFunc(time.Until(at), func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.chans[channel] == st && a.at.Equal(at) {
			a.t, a.at = nil, time.Time{}
			fire()
		}
	})
}

// pendingBy reports whether a is set to go off at or before at.
func (a *alarm) pendingBy(at time.Time) bool { return !a.at.IsZero() && !at.Before(a.at) }

// stop cancels what is pending. Callers hold n.mu.
func (a *alarm) stop() {
	if a.t != nil {
		a.t.Stop()
		a.t = nil
	}
	a.at = time.Time{}
}

// waiter is one subscription.
type waiter struct {
	ch chan struct{} // capacity 1: a wake-up is pending
	id string        // lock id the waiting Acquire asks for (FIFO ticket)
}

// signal wakes w unless a wake-up is already pending.
func (w *waiter) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// subscribeFailure is closed (done) with err set when a SUBSCRIBE could not be
// sent, or its connection was lost before the server confirmed it, so
// that its waiters fail at once instead of at their deadline (the core
// then asks again, as in any outage).
type subscribeFailure struct {
	done chan struct{}
	err  error
	once sync.Once
}

func newSubscribeFailure() *subscribeFailure { return &subscribeFailure{done: make(chan struct{})} }

// failWith closes f with err; the first call wins.
func (f *subscribeFailure) failWith(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.done)
	})
}

// errLostUnconfirmed fails the waiters of a SUBSCRIBE whose connection was
// lost before the server confirmed it.
var errLostUnconfirmed = errors.New("pub/sub connection lost before the subscription was confirmed")

// wireOp is a SUBSCRIBE or UNSUBSCRIBE for the writer goroutine.
type wireOp struct {
	subscribe bool
	channel   string
	fail      *subscribeFailure // for SUBSCRIBE
}

func (n *notifier) init(rdb redis.UniversalClient, fifo bool, grace time.Duration) {
	n.rdb = rdb
	n.fifo = fifo
	n.grace = grace
	n.chans = make(map[string]*channelState)
	n.stop = make(chan struct{})
	n.opReady = make(chan struct{}, 1)
}

// queue schedules op. Callers hold n.mu.
func (n *notifier) queue(op wireOp) {
	n.ops = append(n.ops, op)
	select {
	case n.opReady <- struct{}{}:
	default:
	}
}

// write sends the queued commands in order until close.
func (n *notifier) write(ps *redis.PubSub) {
	ctx := context.Background()
	for {
		select {
		case <-n.stop:
			return
		case <-n.opReady:
		}
		n.mu.Lock()
		ops := n.ops
		n.ops = nil
		n.mu.Unlock()
		for _, op := range ops {
			if !op.subscribe {
				// A failed UNSUBSCRIBE leaves a subscription whose
				// messages wake nobody; go-redis forgets the channel
				// either way, so a reconnect drops it.
				_ = ps.Unsubscribe(ctx, op.channel)
				continue
			}
			if err := ps.Subscribe(ctx, op.channel); err != nil {
				op.fail.failWith(err)
			}
		}
	}
}

// subscribe returns a waiter whose buffered channel receives when a
// message on channel is meant for it (see notifier), once the server has
// confirmed the subscription.
func (n *notifier) subscribe(ctx context.Context, channel string) (*waiter, func(), error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, nil, errClosed
	}
	if n.ps == nil {
		n.ps = n.rdb.Subscribe(context.Background())
		go n.read(n.ps)
		go n.write(n.ps)
	}
	st := n.chans[channel]
	if st == nil {
		st = &channelState{}
		n.chans[channel] = st
	}
	id, _ := dlock.WaitingLockID(ctx)
	w := &waiter{ch: make(chan struct{}, 1), id: id}
	st.waiters = append(st.waiters, w)
	if st.missed(id) {
		w.signal() // it looks again at once
	}
	if !st.subscribed {
		if st.pending == 0 {
			st.ready = make(chan struct{})
		}
		st.subscribed = true
		st.pending++
		st.fail = newSubscribeFailure()
		n.queue(wireOp{subscribe: true, channel: channel, fail: st.fail})
	}
	ready, fail := st.ready, st.fail
	n.mu.Unlock()

	var once sync.Once
	cancel := func() { once.Do(func() { n.unsubscribe(channel, w) }) }
	timer := time.NewTimer(subscribeTimeout)
	defer timer.Stop()
	select {
	case <-ready:
		return w, cancel, nil
	case <-fail.done:
		cancel()
		return nil, nil, fmt.Errorf("redislock: subscribe: %w: %w", dlock.ErrUnavailable, fail.err)
	case <-ctx.Done():
		cancel()
		return nil, nil, ctx.Err()
	case <-timer.C:
		cancel()
		return nil, nil, fmt.Errorf("redislock: subscription not confirmed within %v: %w", subscribeTimeout, dlock.ErrUnavailable)
	}
}

func (n *notifier) unsubscribe(channel string, w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.chans[channel]
	if st == nil {
		return
	}
	st.waiters = slices.DeleteFunc(st.waiters, func(x *waiter) bool { return x == w })
	delete(st.refusals, w.id)
	if st.baton == w {
		// It leaves with the turn it was given, used or not: pass it on.
		// If it was granted, the next one finds the key held and waits.
		st.baton = nil
		if !n.fifo {
			st.wakeOne()
		}
	}
	if len(st.waiters) == 0 && st.subscribed {
		st.subscribed = false
		st.events++
		// No reply need be waited for: a SUBSCRIBE in flight, or the
		// resubscription expected after a lost connection, which go-redis
		// skips once the channel is unsubscribed, would keep the state,
		// and a later subscriber would wait for a reply that never comes.
		// A reply that comes anyway finds no state, or a later
		// subscriber's: it ends that one's wait for its reply early, and
		// that reply, unexpected then, wakes its waiters to look again
		// (see confirmed), so no release is missed.
		st.pending = 0
		if !n.closed {
			n.queue(wireOp{channel: channel})
		}
	}
	n.gc(channel, st)
}

// gc forgets a channel nobody watches and no reply is expected for.
// Callers hold n.mu.
func (n *notifier) gc(channel string, st *channelState) {
	if len(st.waiters) == 0 && !st.subscribed && st.pending == 0 {
		st.fallback.stop()
		st.watch.stop()
		delete(n.chans, channel)
	}
}

// read receives from ps until it is closed.
func (n *notifier) read(ps *redis.PubSub) {
	ctx := context.Background()
	backoff := time.Duration(0)
	for {
		msg, err := ps.ReceiveTimeout(ctx, idlePing)
		if err != nil {
			n.mu.Lock()
			closed := n.closed
			n.mu.Unlock()
			if closed {
				return
			}
			if isTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
				// Silence: ping, so that a dead connection fails the next
				// read and go-redis reconnects.
				_ = ps.Ping(ctx)
				continue
			}
			n.lost()
			backoff = min(max(2*backoff, 20*time.Millisecond), maxBackoff)
			select {
			case <-n.stop:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				n.confirmed(m.Channel)
			}
		case *redis.Message:
			n.wake(m.Channel, m.Payload)
		}
	}
}

// confirmed handles the server's reply to a SUBSCRIBE. A reply nobody
// waits for comes from go-redis resubscribing after a reconnect: messages
// may have been missed, so the channel's waiters are woken.
func (n *notifier) confirmed(channel string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.chans[channel]
	if st == nil {
		return
	}
	if st.pending > 0 {
		st.pending--
		if st.pending == 0 && st.subscribed {
			close(st.ready)
		}
	} else {
		st.events++
		st.wakeAll()
	}
	n.gc(channel, st)
}

// lost handles a broken connection: go-redis resubscribes every channel on
// the next connection, which gives exactly one reply per subscribed
// channel; replies to commands sent on the old one will never come. Those
// waiting for such a reply fail rather than wait for a reconnection that
// may take as long as the outage; later ones wait for the resubscription.
func (n *notifier) lost() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for channel, st := range n.chans {
		st.events++
		if st.pending > 0 {
			st.fail.failWith(errLostUnconfirmed)
			st.fail = newSubscribeFailure()
			st.pending = 0
			if st.subscribed {
				st.pending = 1
			}
		}
		st.wakeAll()
		n.gc(channel, st)
	}
}

// wake handles a message: empty, the lock id of the FIFO queue's head
// when a release knew one, or an announcement (grantMsg, nextMsg; see
// scripts.go).
//
// A named head is woken if it waits here. Whether it waits here or in
// another process, it may not come (it died, gave up, or came too late),
// so everyone here is woken to look again a little past the grace, when
// its place has lapsed, unless a grant is announced first: then the key is
// held again and its release will say who is next. A grant or a head that
// leaves names the next in line; if it waits here, it is woken when the
// lease would end, since a holder that dies publishes nothing. Its look
// then, if the key is still held, names it again; if nothing is heard by
// a grace after the lease would end, the next in line may have died with
// the holder, and everyone here is woken (see watchLease). Without a head,
// one waiter is woken, or with FIFO all of them, since any may be the
// head.
func (n *notifier) wake(channel, payload string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.chans[channel]
	if st == nil {
		return
	}
	st.msgs++
	st.fallback.stop()
	st.watch.stop()
	switch {
	case strings.HasPrefix(payload, grantMsg):
		st.grants++
		// id:ttl:next
		_, rest, _ := strings.Cut(payload[len(grantMsg):], ":")
		ttl, next, _ := strings.Cut(rest, ":")
		st.name(next)
		n.watchLease(channel, st, next, ttl)
	case strings.HasPrefix(payload, nextMsg):
		next, pttl, _ := strings.Cut(payload[len(nextMsg):], ":")
		st.name(next)
		n.watchLease(channel, st, next, pttl)
	case payload != "":
		st.name(payload)
		for _, w := range st.waiters {
			if w.id == payload {
				w.signal()
				break
			}
		}
		n.armFallback(channel, st, n.grace+n.grace/10)
	case n.fifo:
		st.events++
		st.wakeAll()
	default:
		st.events++
		st.wakeOne()
	}
}

// watchLease is for a lease of ms milliseconds from now: the waiter with
// lock id next, if it waits here, is woken when the lease would have
// ended, and everyone here a grace later unless a message comes first
// (the next in line, finding the key held, says so). Callers hold n.mu.
func (n *notifier) watchLease(channel string, st *channelState, next, ms string) {
	d := leaseEnd(ms)
	n.armFallback(channel, st, d+n.grace)
	for _, w := range st.waiters {
		if w.id == next {
			n.set(&st.watch, channel, st, time.Now().Add(d), w.signal)
			return
		}
	}
}

// expectLease is for a FIFO waiter behind the first in line, told that the
// key is held for d more: everyone here is woken a grace after that unless
// a message comes first, in case the first in line died with the holder.
func (n *notifier) expectLease(channel string, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st := n.chans[channel]; st != nil {
		n.armFallback(channel, st, d+n.grace)
	}
}

// leaseEnd is how long a lease of ms milliseconds from now lasts, with the
// core's margin for clock rates.
func leaseEnd(ms string) time.Duration {
	v, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || v < 0 {
		return time.Second // no expiry (another library's lock): look now and then
	}
	ttl := time.Duration(v) * time.Millisecond
	return ttl + ttl/100 + 2*time.Millisecond
}

// refused notes, for subscribe, that the waiting lock id was refused on
// channel after this process had heard h (taken before the attempt was
// sent, so that a message about a release after the refusal cannot slip
// in before the note): if the subscription was live then, and nothing is
// heard before the waiter subscribes, it missed nothing.
func (n *notifier) refused(channel, id string, h heard) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.chans[channel]
	if st == nil || !h.live {
		return
	}
	if st.refusals == nil {
		st.refusals = make(map[string]heard)
	}
	st.refusals[id] = h
}

// watchExpiry is for a waiter without FIFO told that the key is held until
// at. A holder that dies publishes nothing, so someone must look then, but
// one waiter of this process is enough: the one whose turn it is is woken
// (the others look on their own only later; see Backend.Acquire). An
// earlier pending watch stands; any message cancels it.
func (n *notifier) watchExpiry(channel string, at time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.chans[channel]
	at = at.Add(2 * time.Millisecond) // past it by the server's clock too
	if st == nil || st.watch.pendingBy(at) {
		return
	}
	n.set(&st.watch, channel, st, at, st.wakeOne)
}

// heard is what this process had heard on a channel before a waiter's
// attempt: the grants announced (for expectGrant), the events (for
// refused), and whether the subscription was live.
type heard struct {
	grants, events, msgs uint64
	live                 bool
}

func (n *notifier) heard(channel string) heard {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st := n.chans[channel]; st != nil {
		return heard{grants: st.grants, events: st.events, msgs: st.msgs, live: st.live()}
	}
	return heard{}
}

// expectGrant is for a FIFO waiter told that the key is free but promised
// to a head that has until d from now to take it: everyone here is woken
// then unless a grant is announced first. A grant announced since seq
// (from heard before the waiter asked) may be the head's, arriving
// before the reply: then nothing is armed, and if it was an earlier grant,
// the release that freed the key since has armed its own fallback.
func (n *notifier) expectGrant(channel string, seq uint64, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st := n.chans[channel]; st != nil && st.grants == seq {
		n.armFallback(channel, st, d)
	}
}

// armFallback wakes every waiter on channel d from now, unless a message
// comes first or an earlier fallback is pending. Callers hold n.mu.
func (n *notifier) armFallback(channel string, st *channelState, d time.Duration) {
	at := time.Now().Add(d)
	if !st.fallback.pendingBy(at) {
		n.set(&st.fallback, channel, st, at, st.wakeAll)
	}
}

// wakeOne wakes the waiter whose turn it is and moves it to the back.
// Callers hold n.mu.
func (st *channelState) wakeOne() {
	if len(st.waiters) == 0 {
		return
	}
	w := st.waiters[0]
	copy(st.waiters, st.waiters[1:])
	st.waiters[len(st.waiters)-1] = w
	st.baton = w
	w.signal()
}

// wakeAll wakes every waiter, for events after which any of them may
// succeed. Callers hold n.mu.
func (st *channelState) wakeAll() {
	for _, w := range st.waiters {
		w.signal()
	}
}

// close stops the reader and the writer and closes the connection,
// without waiting: closing may block on a dial or handshake in progress
// (for up to go-redis's timeouts), and the goroutines exit by themselves
// once it is done. Current waiters are woken once so that they look at the
// key again.
func (n *notifier) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	close(n.stop)
	for _, st := range n.chans {
		st.wakeAll()
	}
	if ps := n.ps; ps != nil {
		go func() { _ = ps.Close() }()
	}
	return nil
}

// Subscribe implements [dlock.Notifier]. All of a Backend's waiters share
// one pub/sub connection, opened on first use and closed by
// [Backend.Close]. The core subscribes after a waiter's first refusal; the
// channel starts with a value (the waiter looks again at once) unless this
// process's subscription to the key was live from before that attempt and
// heard nothing since that may concern this waiter (see
// channelState.missed): a waiter joining others costs no extra look.
func (b *Backend) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	n := b.names(key)
	w, cancel, err := b.notify.subscribe(ctx, n.channel)
	if err != nil {
		if errors.Is(err, dlock.ErrUnavailable) {
			return nil, nil, err
		}
		return nil, nil, b.fail(ctx, "subscribe", key, err)
	}
	return w.ch, cancel, nil
}
