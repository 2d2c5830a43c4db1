package dlock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/dlock-dev/dlock/internal/detach"
)

// Client takes locks on one backend. It is safe for concurrent use and keeps
// track of the locks it holds, for [Client.ReleaseAll] and [Client.Stats].
type Client struct {
	backend  Backend
	defaults options

	held     heldLocks
	cleanups detach.Group // releases running in the background, for Drain
	retrying atomic.Int32 // releases being made again (see releaseLater)
	local    *localWake   // nil when the backend is a Notifier
}

// New returns a client over b. opts set defaults for every call; see
// [Option]. An invalid option is reported by each call that uses it.
func New(b Backend, opts ...Option) *Client {
	d := defaultOptions()
	d.owner.Host, _ = os.Hostname()
	d.owner.PID = os.Getpid()
	for _, opt := range opts {
		opt(&d)
	}
	c := &Client{backend: b, defaults: d}
	if _, ok := b.(Notifier); !ok {
		c.local = &localWake{}
	}
	return c
}

// Backend returns the backend the client was built on.
func (c *Client) Backend() Backend { return c.backend }

func (c *Client) options(opts []Option) (options, error) {
	o := c.defaults
	for _, opt := range opts {
		opt(&o)
	}
	return o, o.err
}

// TryAcquire makes one attempt to take key. It returns the held lock, or an
// error matching [ErrNotAcquired] (a [*NotAcquiredError] naming the holder)
// if the key is held, [ErrInvalidKey], [ErrInvalidTTL], [ErrInvalidOption],
// or a backend error such as [ErrUnavailable].
func (c *Client) TryAcquire(ctx context.Context, key string, opts ...Option) (*Lock, error) {
	return c.acquire(ctx, key, opts, true)
}

// Acquire takes key, waiting while it is held until it is granted, ctx is
// done or the [WithMaxWait] bound passes. Waiting is woken by the store when
// the backend is a [Notifier] and, in any case, at the holder's expiry;
// otherwise it sleeps per the [RetryStrategy], and is woken when this
// Client frees the key (a release by another goroutine; each such wake is
// an attempt of the strategy). When waiting ends without a
// grant the error is a [*NotAcquiredError] that matches both
// [ErrNotAcquired] and the reason (ctx.Err(), context.DeadlineExceeded for
// the max wait). Other errors are as for [Client.TryAcquire].
//
// A store outage does not end a wait that has begun: once the store has
// answered (the key is held), an attempt that fails with [ErrUnavailable]
// is given back and made again, with a fresh token (and so a new place in
// a FIFO queue), after a backoff from 10ms to a second, until the wait
// ends; its Cause then also matches the store's error. With a
// [RetryStrategy] (no Notifier) such attempts count as attempts. An
// unavailable store on the first attempt fails at once, so that a wrong
// address is not a silent wait, and so does [ErrClosed].
func (c *Client) Acquire(ctx context.Context, key string, opts ...Option) (*Lock, error) {
	return c.acquire(ctx, key, opts, false)
}

// outageBackoff spaces the attempts of a wait while the store is
// unavailable.
var outageBackoff = ExponentialBackoff(10*time.Millisecond, time.Second)

// acquire is Acquire, or with once TryAcquire (as WithMaxWait(0), without
// the allocations of appending it).
func (c *Client) acquire(ctx context.Context, key string, opts []Option, once bool) (*Lock, error) {
	o, err := c.options(opts)
	if err != nil {
		return nil, err
	}
	if once {
		o.maxWait = 0
	}
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ValidateTTL(o.ttl); err != nil {
		return nil, err
	}
	waitBase := ctx
	if o.maxWait > 0 {
		var cancel context.CancelFunc
		waitBase, cancel = context.WithTimeout(ctx, o.maxWait)
		defer cancel()
	}
	notifier, notify := c.backend.(Notifier)
	notify = notify && o.maxWait != 0

	var (
		req         = AcquireRequest{Key: key, TTL: o.ttl, Owner: o.owner}
		waitCtx     context.Context
		changed     <-chan struct{}
		unsubscribe = func() {}
		freedHere   <-chan struct{} // without a Notifier: freed by this Client
		unlisten    = func() {}
	)
	defer func() { unsubscribe(); unlisten() }()
	// fresh starts the request again with a token of its own: one whose
	// attempt failed was given back, which may leave a mark refusing it.
	fresh := func() {
		req.Token = newToken()
		req.LockID = LockID(req.Token)
		waitCtx = waitBase
		if notify {
			waitCtx = context.WithValue(waitBase, waitingKey{}, req.LockID)
		}
		unsubscribe()
		unsubscribe, changed = func() {}, nil
	}
	fresh()

	var lastHolder *Record // the holder last seen, reported if waiting ends
	var outage error       // why the last attempt failed, in an outage
	outages := 0           // attempts in a row that failed after an answer
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		rec, granted, err := c.backend.Acquire(waitCtx, req)
		if err == nil && !granted && o.maxWait != 0 {
			lastHolder = &rec
			if c.local != nil && freedHere == nil {
				freedHere, unlisten = c.local.listen(key)
			}
			if attempt == 1 && o.onWait != nil {
				o.onWait(rec)
			}
		}
		if err == nil && !granted && notify && changed == nil {
			// Subscribe only once the key is found held, so that an
			// uncontended Acquire costs what TryAcquire does (on Redis a
			// subscription is a round trip of its own). The backend wakes
			// us at once if a release may have come since the refusal.
			var ch <-chan struct{}
			var cancel func()
			if ch, cancel, err = notifier.Subscribe(waitCtx, key); err == nil {
				changed, unsubscribe = ch, cancel
			}
		}
		if err != nil {
			// The request may have landed before the error (a timeout after
			// sending), or a refused one left something behind (a FIFO
			// ticket): give back what we may hold, on a context of our own.
			c.abandon(ctx, key, req.Token, sent.Add(o.ttl))
			// Once the store has answered, the wait has begun and an
			// outage does not end it.
			unavailable := lastHolder != nil && errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed)
			if unavailable {
				outage = err
			}
			if waitCtx.Err() != nil && outage != nil {
				// The wait ended in an outage, perhaps during an attempt.
				return nil, outageEnded(key, lastHolder, context.Cause(waitCtx), outage)
			}
			if !unavailable || waitCtx.Err() != nil || !notify && o.retry.NextBackoff(attempt) <= 0 {
				return nil, c.acquireError(key, lastHolder, err)
			}
			outages++
			if outages == 1 && o.onOutage != nil {
				o.onOutage(err)
			}
			fresh()
			if werr := sleepCtx(waitCtx, outageBackoff.NextBackoff(outages)); werr != nil {
				return nil, outageEnded(key, lastHolder, werr, outage)
			}
			continue
		}
		outage = nil
		outages = 0
		if granted {
			return c.newLock(rec, req.Token, sent, o), nil
		}
		if o.maxWait == 0 {
			return nil, &NotAcquiredError{Key: key, Holder: &rec}
		}
		if err := c.sleep(waitCtx, o.retry, attempt, rec, changed, freedHere); err != nil {
			return nil, &NotAcquiredError{Key: key, Holder: &rec, Cause: err}
		}
	}
}

// outageEnded is the error of a wait that ended (cause) while the store
// was unavailable (storeErr): it matches both.
func outageEnded(key string, holder *Record, cause, storeErr error) error {
	return &NotAcquiredError{Key: key, Holder: holder, Cause: fmt.Errorf("%w; the store did not answer: %w", cause, storeErr)}
}

// sleepCtx sleeps for d or until ctx ends, whose cause it returns then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// acquireError keeps context errors recognisable as an ended wait.
func (c *Client) acquireError(key string, holder *Record, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &NotAcquiredError{Key: key, Holder: holder, Cause: err}
	}
	return fmt.Errorf("dlock: acquire %q: %w", key, err)
}

// sleep waits for the next attempt: a store notification (changed), a
// release by this Client when the backend cannot notify (freedHere), the
// holder's expiry (or the backend's NextLook) or the retry strategy's
// backoff, whichever comes first.
func (c *Client) sleep(ctx context.Context, retry RetryStrategy, attempt int, holder Record, changed, freedHere <-chan struct{}) error {
	look := holder.ExpiresAt
	if !holder.NextLook.IsZero() && changed != nil {
		look = holder.NextLook
	}
	// A small margin past expiry, so that the store agrees it has passed.
	untilExpiry := time.Until(look) + time.Millisecond
	if look.IsZero() {
		untilExpiry = time.Second // the store did not say; look again soon
	}
	d := untilExpiry
	if changed == nil {
		backoff := retry.NextBackoff(attempt)
		if backoff <= 0 {
			return ErrRetriesExhausted
		}
		d = min(d, backoff)
	}
	d = max(d, 0)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-changed:
	case <-freedHere:
	case <-t.C:
	}
	return nil
}

// Do takes key (waiting like [Client.Acquire]), runs fn and releases the
// lock when fn returns or panics. The lock is refreshed while fn runs unless
// WithAutoRefresh(false) is given. fn's context is cancelled, with the lost
// error as its cause, the moment the lock can no longer be assumed held; fn
// should stop touching the resource then. Do returns fn's error, joined with
// an error matching [ErrLockLost] if the lock was lost while fn ran, or the
// acquire error (fn did not run).
func (c *Client) Do(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...Option) (err error) {
	lock, err := c.Acquire(ctx, key, append([]Option{WithAutoRefresh(true)}, opts...)...)
	if err != nil {
		return err
	}
	fnCtx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(lock.Context(), func() { cancel(context.Cause(lock.Context())) })
	defer func() {
		stop()
		cancel(nil)
		lost := lock.Err()
		relCtx, relCancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer relCancel()
		relErr := lock.Release(relCtx)
		switch {
		case lost != nil:
			err = errors.Join(err, lost)
		case relErr != nil:
			err = errors.Join(err, relErr)
		}
	}()
	return fn(fnCtx)
}

// Inspect returns the live lease on key, with found=false when the key is
// free. The record never contains the holder's token.
func (c *Client) Inspect(ctx context.Context, key string) (rec Record, found bool, err error) {
	if err := ValidateKey(key); err != nil {
		return Record{}, false, err
	}
	return c.backend.Inspect(ctx, key)
}

// IsLocked reports whether key is held by a live lease. The answer may be
// stale as soon as it returns: to act on a free key, acquire it.
func (c *Client) IsLocked(ctx context.Context, key string) (bool, error) {
	_, found, err := c.Inspect(ctx, key)
	return found, err
}

// List returns the live leases whose keys start with prefix, or an error
// matching [ErrUnsupported] if the backend cannot enumerate.
func (c *Client) List(ctx context.Context, prefix string) ([]Record, error) {
	l, ok := c.backend.(Lister)
	if !ok {
		return nil, fmt.Errorf("dlock: list: %w", ErrUnsupported)
	}
	return l.List(ctx, prefix)
}

// Waiting returns how many waiting acquires are queued for key, on a
// backend with FIFO queues; elsewhere the error matches [ErrUnsupported].
func (c *Client) Waiting(ctx context.Context, key string) (int, error) {
	q, ok := c.backend.(QueueReporter)
	if !ok {
		return 0, fmt.Errorf("dlock: waiting: %w", ErrUnsupported)
	}
	if err := ValidateKey(key); err != nil {
		return 0, err
	}
	return q.Waiting(ctx, key)
}

// Stats counts the backend's records and the locks this client holds. On a
// backend that cannot count, only Held is filled and the error matches
// [ErrUnsupported].
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	held := c.held.len()
	s, ok := c.backend.(StatsReporter)
	if !ok {
		return Stats{Held: held}, fmt.Errorf("dlock: stats: %w", ErrUnsupported)
	}
	st, err := s.Stats(ctx)
	st.Held = held
	return st, err
}

// Cleanup removes the records of expired leases and returns how many it
// removed, or an error matching [ErrUnsupported].
func (c *Client) Cleanup(ctx context.Context) (int, error) {
	cl, ok := c.backend.(Cleaner)
	if !ok {
		return 0, fmt.Errorf("dlock: cleanup: %w", ErrUnsupported)
	}
	return cl.Cleanup(ctx)
}

// Break frees key whoever holds it (an administrator's tool) and returns the
// lease it broke, with found=false if the key was free. The former holder's
// Refresh and Release fail with [ErrNotHeld].
func (c *Client) Break(ctx context.Context, key string) (rec Record, found bool, err error) {
	if err := ValidateKey(key); err != nil {
		return Record{}, false, err
	}
	b, ok := c.backend.(Breaker)
	if !ok {
		return Record{}, false, fmt.Errorf("dlock: break: %w", ErrUnsupported)
	}
	rec, found, err = b.Break(ctx, key)
	if err == nil && found {
		c.local.wake(key)
	}
	return rec, found, err
}

// Drain waits until the releases the client runs in the background have
// finished, and then the backend's own background calls if it is a
// [Drainer], or until ctx ends (its error is returned then). The client
// runs such a release when an acquire fails after its request may have
// reached the store (a timeout or lost reply): it gives the token back so
// that the key is not held by nobody until the TTL, but waits for that
// only briefly before returning the error. Each such release gives up
// after a few seconds. A program that closes its backend or exits right
// after a failed acquire should call Drain first; otherwise the release
// may never be sent. Releases the store did not confirm, which the client
// makes again for up to a minute (see [Lock.Release]), are not waited for.
func (c *Client) Drain(ctx context.Context) error {
	if err := c.cleanups.Wait(ctx); err != nil {
		return err
	}
	if d, ok := c.backend.(Drainer); ok {
		return d.Drain(ctx)
	}
	return nil
}

// ReleaseAll releases every lock this client holds, for shutdown handlers
// (which call [Client.Drain] after it). It returns how many it released
// and the errors of those it could not (joined; locks already lost count
// as not released).
func (c *Client) ReleaseAll(ctx context.Context) (int, error) {
	locks := c.held.all()
	var errs []error
	n := 0
	for _, l := range locks {
		if err := l.Release(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
