// Package detach lets a caller leave a call it cannot cancel once its
// context ends, undoes what such a call did after the caller left, makes
// again a call whose outcome is unknown, and counts what still runs in the
// background so that a program can wait for it before it exits.
package detach

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"
)

// Retry's pace: it waits RetryBackoff before the first attempt, then twice
// as long each time, up to RetryBackoffMax. RetryFor is how long callers
// go on at most when nothing else bounds the attempts.
const (
	RetryBackoff    = 10 * time.Millisecond
	RetryBackoffMax = time.Second
	RetryFor        = time.Minute
)

// Unconfirmed reports whether err, returned by a call that changes the
// store (a release), leaves unknown whether the change was made: the call
// ran out of time or the store was not reached (unavailable is the
// caller's error for that), as opposed to one the store made or refused.
// Such a call is worth making again, unless the store refused the
// connection: it is down, and what it held is lost with it or comes back
// with its TTL still running; asking it again would only add load to its
// return, and one store of several down would set every release retrying.
// Nor is one through a closed client (the caller's closed error), which
// would fail the same way again.
func Unconfirmed(err, unavailable, closed error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, closed) {
		return false
	}
	return errors.Is(err, unavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// Retry calls again, after a backoff, while again returns true, until ctx
// ends or the next attempt would start after stop.
func Retry(ctx context.Context, stop time.Time, again func() bool) {
	for wait := RetryBackoff; time.Now().Add(wait).Before(stop); wait = min(2*wait, RetryBackoffMax) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !again() {
			return
		}
	}
}

// Group counts goroutines running in the background. Unlike a
// sync.WaitGroup it may be waited for while goroutines are being added,
// and a wait ends with its context. The zero value is ready.
type Group struct {
	mu sync.Mutex
	n  int
	// none is closed when n drops to zero; a new one is made when a
	// goroutine is added to none.
	none chan struct{}
}

// Go runs fn on a goroutine of its own, counted until fn returns.
func (g *Group) Go(fn func()) {
	g.add()
	go func() {
		defer g.done()
		fn()
	}()
}

// Start counts one piece of background work, which the caller runs itself,
// until done is called. Calls of done after the first do nothing.
func (g *Group) Start() (done func()) {
	g.add()
	var once sync.Once
	return func() { once.Do(g.done) }
}

func (g *Group) add() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		g.none = make(chan struct{})
	}
	g.n++
}

func (g *Group) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 {
		close(g.none)
	}
}

// Wait waits until no goroutine of g runs, or ctx ends (its cause is
// returned then). With none running it returns nil, whatever ctx.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	none := g.none
	g.mu.Unlock()
	select {
	case <-none:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

type keepLateKey struct{}

// KeepLate marks ctx for a caller that will ask again with the same token
// (package redlock, whose core retries an acquire with one token): a write
// made with it that lands after ctx ended must not be undone, since the
// undo could take the grant of the later attempt instead.
func KeepLate(ctx context.Context) context.Context {
	return context.WithValue(ctx, keepLateKey{}, true)
}

// LateKept reports whether ctx was marked by KeepLate.
func LateKept(ctx context.Context) bool {
	keep, _ := ctx.Value(keepLateKey{}).(bool)
	return keep
}

// Call runs fn and returns its result, or ctx's error as soon as ctx ends.
// fn runs on a goroutine of g (or an uncounted one if g is nil), unless ctx
// cannot end. When ctx wins, fn goes on in the background, and if it then
// succeeds late (if not nil) receives its result, so that a write that
// landed after its caller left can be undone.
func Call[T any](ctx context.Context, g *Group, fn func() (T, error), late func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if ctx.Done() == nil {
		return fn() // cannot be cancelled: no goroutine needed
	}
	type result struct {
		v   T
		err error
	}
	var (
		mu        sync.Mutex
		abandoned bool
		done      = make(chan result, 1)
	)
	run := func() {
		v, err := fn()
		mu.Lock()
		gone := abandoned
		if !gone {
			done <- result{v, err}
		}
		mu.Unlock()
		if gone && err == nil && late != nil {
			late(v)
		}
	}
	if g != nil {
		g.Go(run)
	} else {
		go run()
	}
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		select {
		case r := <-done: // it finished meanwhile: use it
			return r.v, r.err
		default:
		}
		abandoned = true
		return zero, ctx.Err()
	}
}
