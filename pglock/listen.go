package pglock

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/jackc/pgx/v5"
)

// listener is a backend's one connection that LISTENs on its channel, and
// the waiters it wakes. Its goroutine starts with the first Subscribe and
// runs until Close. It holds a connection only while there are waiters
// (and for a linger after the last one leaves, so that a process that
// waits again soon does not reconnect), reconnecting when the connection
// fails; once it listens again it wakes every waiter, for the releases it
// may have missed.
//
// A statement comes first: when the server has no free connection slot
// for one, the listener gives its connection up (yield) and stays off
// until a statement got a connection again (feed). Otherwise a crowd of
// waiting processes could fill every slot with listening connections and
// leave none for the statements that acquire and release.
//
// A release wakes one sleeping waiter of the key in this process, the one
// that has waited longest, not all of them: the others would only be
// refused. Waiters whose attempt is in flight are woken too, since their
// attempt may have been refused just before the release. A woken waiter
// that leaves before it looks again hands its wake-up on.
type listener struct {
	b *Backend

	mu        sync.Mutex
	byKey     map[string][]*sub      // in the order they came
	byID      map[string]*sub        // by waiting lock id
	entered   map[string]bool        // keys whose waiters in the database name this backend
	fallback  map[string]*time.Timer // per key: a look if no release follows one that named others
	listening bool                   // LISTEN is in effect on the connection
	running   bool
	closed    bool
	stop      context.CancelFunc
	done      chan struct{}

	starved atomic.Bool        // a statement found no connection slot
	drop    context.CancelFunc // ends the current connection, if any
	dropped bool               // drop was called: no backoff before the next
	idle    *time.Timer        // drops the connection once nobody waits
	linger  time.Duration
	kick    chan struct{} // the goroutine may have a connection to make
}

// linger is how long the listener keeps its connection after the last
// waiter leaves.
const linger = time.Second

type sub struct {
	key, id    string
	ch         chan struct{}
	subscribed bool // else only armed by an Acquire
	inFlight   bool // an attempt is on its way
	woken      bool // woken, and has not looked since
	heard      bool // was listening for it since it last looked
}

func newListener(b *Backend) *listener {
	return &listener{
		b: b, byKey: map[string][]*sub{}, byID: map[string]*sub{}, entered: map[string]bool{},
		fallback: map[string]*time.Timer{},
		linger:   linger, kick: make(chan struct{}, 1),
	}
}

// arm is called as a waiting acquire id sends an attempt on key: it
// starts catching releases from then on, so that the Subscribe that
// follows a refusal misses none.
func (l *listener) arm(key, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.byID[id]
	if s == nil {
		s = &sub{key: key, id: id, ch: make(chan struct{}, 1)}
		l.add(s)
	}
	s.inFlight, s.woken, s.heard = true, false, l.listening
}

// settle records that the attempt of id ended: refused (it now sleeps),
// or else granted or failed (it leaves, unless subscribed). entered: the
// statement put this backend among the key's waiters; left: it took it
// out.
func (l *listener) settle(id string, refused, entered, left bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.byID[id]
	if s == nil {
		return
	}
	if entered {
		l.entered[s.key] = true
	}
	if left {
		delete(l.entered, s.key)
	}
	s.inFlight = false
	if !refused && !s.subscribed {
		l.remove(s)
	}
}

func (l *listener) add(s *sub) {
	l.byKey[s.key] = append(l.byKey[s.key], s)
	if s.id != "" {
		l.byID[s.id] = s
	}
}

// remove drops s; a wake-up it did not act on goes to the next waiter.
func (l *listener) remove(s *sub) {
	subs := slices.DeleteFunc(l.byKey[s.key], func(x *sub) bool { return x == s })
	if len(subs) == 0 {
		delete(l.byKey, s.key)
	} else {
		l.byKey[s.key] = subs
	}
	if s.id != "" && l.byID[s.id] == s {
		delete(l.byID, s.id)
	}
	if s.woken {
		l.wakeNext(s.key)
	}
	if len(l.byKey[s.key]) == 0 && l.entered[s.key] {
		// The last waiter of the key here gave up: out of the key's
		// waiters, so that releases name backends where someone waits.
		delete(l.entered, s.key)
		go l.b.leave(s.key)
	}
	if len(l.byKey) == 0 && l.drop != nil && l.idle == nil {
		l.idle = time.AfterFunc(l.linger, l.dropIfIdle)
	}
}

// dropIfIdle ends the connection if nobody waits.
func (l *listener) dropIfIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idle = nil
	if len(l.byKey) == 0 {
		l.dropConn()
	}
}

// dropConn ends the current connection, if any; l.mu is held.
func (l *listener) dropConn() {
	if l.drop != nil {
		l.drop()
		l.drop, l.dropped = nil, true
	}
}

// yield gives the connection up for a statement that found the server
// full, and keeps it off until feed.
func (l *listener) yield() {
	l.starved.Store(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dropConn()
}

// feed records that a statement got a connection: the listener may take
// one again.
func (l *listener) feed() {
	if l.starved.CompareAndSwap(true, false) {
		l.signal()
	}
}

func (l *listener) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (s *sub) wake() {
	s.woken = true
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// subscribe returns the channel of the waiter id on key: the one armed
// for it if its refused attempt was sent while listening, else one that
// holds a wake-up already (a release may have come between the refusal
// and now).
func (l *listener) subscribe(key, id string) (<-chan struct{}, func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, nil, fmt.Errorf("backend %w", dlock.ErrClosed)
	}
	if !l.running {
		ctx, stop := context.WithCancel(context.Background())
		l.running, l.stop, l.done = true, stop, make(chan struct{})
		go l.run(ctx)
	}
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	s := l.byID[id]
	if s == nil || s.key != key || s.subscribed || id == "" {
		s = &sub{key: key, id: id, ch: make(chan struct{}, 1)}
		l.add(s)
	}
	s.subscribed = true
	l.signal()
	if !s.heard {
		s.wake()
	}
	cancel := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.remove(s)
	}
	return s.ch, cancel, nil
}

// deliver wakes the waiters of the key a notification concerns. Its
// payload is the key, then, from a release, the names of the backends
// whose waiters have waited longest, one a line: if this backend is named,
// its longest sleeper of the key is woken, and otherwise nobody but the
// attempts in flight. Without names (the key had no waiters the release
// saw, or a break, cleanup or shortening refresh), the longest sleeper of
// the key in each backend is woken.
func (l *listener) deliver(payload string) {
	key, ids, named := strings.Cut(payload, "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.byKey[key] {
		if s.inFlight {
			s.wake()
		}
	}
	if !named {
		l.wakeNext(key)
		return
	}
	// Named second, this backend gives the first, which may have died, a
	// head start. Not named, it looks anyway if no release of the key
	// follows within fallbackLook: the named ones may not have been able
	// to take the key (a full server, a listening connection gone).
	if t := l.fallback[key]; t != nil {
		t.Stop()
	}
	wait := fallbackLook
	for i, name := range slices.Collect(strings.SplitSeq(ids, "\n")) {
		if name == l.b.waiter {
			wait = time.Duration(i) * headStart
			break
		}
	}
	if wait == 0 {
		delete(l.fallback, key)
		l.wakeNext(key)
		return
	}
	if len(l.byKey[key]) == 0 {
		delete(l.fallback, key)
		return
	}
	var t *time.Timer
	t = time.AfterFunc(wait, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.fallback[key] == t {
			delete(l.fallback, key)
		}
		l.wakeNext(key)
	})
	l.fallback[key] = t
}

// fallbackLook is how long a backend that a release did not name waits
// for another release of the key before one of its waiters looks anyway.
const fallbackLook = time.Second

// waiterState is what a waiting acquire of key by id needs to know of this
// backend: whether it is among the key's waiters in the database, as far
// as it knows; whether other waiters of the key wait here; and whether it
// hears releases (not while its listening connection gave its slot up).
func (l *listener) waiterState(key, id string) (entered, others, hearing bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.byKey[key] {
		if s.id != id {
			others = true
			break
		}
	}
	return l.entered[key], others, !l.starved.Load()
}

// headStart is how long a waiter a release named second waits for the
// first, in another process, to take the key before it looks itself.
const headStart = 50 * time.Millisecond

// wakeNext wakes the longest-waiting sleeper of key that was not woken
// yet (one refused but not yet subscribed counts: it finds the wake-up
// when it subscribes).
func (l *listener) wakeNext(key string) {
	for _, s := range l.byKey[key] {
		if !s.inFlight && !s.woken {
			s.wake()
			return
		}
	}
}

// setListening records whether LISTEN is in effect. Once it is again,
// waiters that were not heard for all the time since they looked are
// woken: a release may have come while nobody listened. (Not when the
// connection fails: the server is likely down, and a waiter that looked
// then would end its wait with the error.)
func (l *listener) setListening(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.listening = on
	for _, subs := range l.byKey {
		for _, s := range subs {
			if on && !s.heard {
				s.wake()
			}
			s.heard = on
		}
	}
}

// Reconnection backoff bounds: a server that is down is tried again soon,
// but not in a loop.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
)

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := minBackoff
	for l.await(ctx) {
		cctx, drop := context.WithCancel(ctx)
		l.mu.Lock()
		l.drop, l.dropped = drop, false
		if len(l.byKey) == 0 && l.idle == nil {
			l.idle = time.AfterFunc(l.linger, l.dropIfIdle)
		}
		l.mu.Unlock()
		listened, err := l.listen(cctx)
		l.mu.Lock()
		dropped := l.dropped
		l.drop = nil
		l.mu.Unlock()
		drop()
		l.setListening(false)
		if ctx.Err() != nil {
			return
		}
		if listened || dropped {
			backoff = minBackoff
		}
		if dropped {
			continue
		}
		_ = err // the waiters look again; the next connection may work
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// await waits until a connection is wanted: there are waiters and no
// statement is starved of a connection slot. It returns false once ctx
// ends.
func (l *listener) await(ctx context.Context) bool {
	for {
		l.mu.Lock()
		wanted := len(l.byKey) > 0 && !l.starved.Load()
		l.mu.Unlock()
		if wanted {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-l.kick:
		}
	}
}

// listen takes a connection out of the pool for good, LISTENs on it and
// delivers notifications until it fails or ctx ends. listened says
// whether LISTEN took effect.
func (l *listener) listen(ctx context.Context) (listened bool, err error) {
	pc, err := l.b.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{l.b.channel}.Sanitize()); err != nil {
		return false, err
	}
	l.setListening(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		l.deliver(n.Payload)
	}
}

// close stops the listening connection and waits for it; waiters are
// woken to look again.
func (l *listener) close() {
	l.mu.Lock()
	l.closed = true
	for _, t := range l.fallback {
		t.Stop()
	}
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	running, stop, done := l.running, l.stop, l.done
	l.mu.Unlock()
	if running {
		stop()
		<-done
	}
}
