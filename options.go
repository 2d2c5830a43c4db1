package dlock

import (
	"fmt"
	"time"
)

// Option configures a [Client] (in [New], as the default for every call) or
// one call (TryAcquire, Acquire, Do), overriding the client's defaults. An
// invalid value makes the call fail with an error wrapping
// [ErrInvalidOption] (or [ErrInvalidTTL]); it never panics.
type Option func(*options)

type options struct {
	ttl          time.Duration
	maxWait      time.Duration // <0: until ctx is done
	retry        RetryStrategy
	autoRefresh  bool
	refreshEvery time.Duration // 0: ttl/3
	maxHold      time.Duration // 0: no bound
	minHold      time.Duration // 0: a release frees the key at once
	owner        Owner
	onWait       func(holder Record) // nil: nobody is told
	onOutage     func(err error)     // nil: nobody is told
	err          error
}

const (
	// DefaultTTL is the lease length when no [WithTTL] is given.
	DefaultTTL = 30 * time.Second
	// cleanupTimeout bounds releases made on the caller's behalf after its
	// own context was cancelled.
	cleanupTimeout = 5 * time.Second
	// abandonWait is how long a failed acquire waits for the release of
	// its possibly granted token before returning.
	abandonWait = 100 * time.Millisecond
)

func defaultOptions() options {
	return options{ttl: DefaultTTL, maxWait: -1, retry: DefaultRetry()}
}

func (o *options) fail(format string, args ...any) {
	if o.err == nil {
		o.err = fmt.Errorf(format, args...)
	}
}

// WithTTL sets the lease length. Default [DefaultTTL] (30s). A value outside
// [MinTTL, MaxTTL] makes the call fail with [ErrInvalidTTL].
func WithTTL(ttl time.Duration) Option {
	return func(o *options) {
		if err := ValidateTTL(ttl); err != nil {
			o.fail("%w", err)
		}
		o.ttl = ttl
	}
}

// WithMaxWait bounds how long Acquire and Do wait for a held key. Default:
// until the context is done. 0 means one attempt, no waiting. A negative
// value fails with [ErrInvalidOption].
func WithMaxWait(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.fail("%w: negative max wait %v", ErrInvalidOption, d)
		}
		o.maxWait = d
	}
}

// WithOnWait calls fn when an Acquire (or Do) finds key held and starts to
// wait, with the holder's record, so that a program can say why it is
// waiting (the dlock command prints a line on a terminal). A record with no
// LockID is a key that is free but promised to a waiter ahead in a FIFO
// queue. fn runs on the caller's goroutine at most once per call, before
// the wait; it is never called by TryAcquire or with WithMaxWait(0), which
// do not wait. nil (the default) calls nothing.
func WithOnWait(fn func(holder Record)) Option { return func(o *options) { o.onWait = fn } }

// WithOnOutage calls fn when a waiting Acquire (or Do) finds the store
// unavailable after it had answered, and waits on (see [Client.Acquire]),
// with the store's error, so that a program can say why the wait goes on
// (the dlock command prints a line on a terminal). fn runs on the caller's
// goroutine once per outage: again only after the store has answered in
// between. nil (the default) calls nothing.
func WithOnOutage(fn func(err error)) Option { return func(o *options) { o.onOutage = fn } }

// WithRetry sets how waiting Acquires sleep between attempts on backends that
// cannot notify waiters. Default [DefaultRetry]. nil fails with
// [ErrInvalidOption].
func WithRetry(s RetryStrategy) Option {
	return func(o *options) {
		if s == nil {
			o.fail("%w: nil retry strategy", ErrInvalidOption)
		}
		o.retry = s
	}
}

// WithAutoRefresh turns the watchdog on or off: while on, the lock is
// refreshed every refresh interval until it is released, lost or the
// maximum hold time passes. Default off, except in [Client.Do].
func WithAutoRefresh(on bool) Option { return func(o *options) { o.autoRefresh = on } }

// WithRefreshInterval sets how often the watchdog refreshes. Default a third
// of the TTL. A value that is not positive fails with [ErrInvalidOption]; a
// value not below the TTL is lowered to a third of it.
func WithRefreshInterval(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.fail("%w: refresh interval %v is not positive", ErrInvalidOption, d)
		}
		o.refreshEvery = d
	}
}

// WithMaxHold bounds how long the watchdog keeps a lock: when d has passed
// since the grant it stops refreshing and the lock's Done fires with
// [ErrMaxHold], so a hung holder cannot keep a key forever. Default 0, no
// bound. A negative value fails with [ErrInvalidOption].
func WithMaxHold(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.fail("%w: negative max hold %v", ErrInvalidOption, d)
		}
		o.maxHold = d
	}
}

// WithMinHold keeps the key taken for at least d after the grant: a
// [Lock.Release] (also the one that ends [Client.Do], and
// [Client.ReleaseAll]) that comes sooner ends this process's hold, fires
// Done with [ErrReleased] and returns nil as usual, but instead of freeing
// the key it leaves the lease in the store until d after the grant, whatever
// becomes of this process (see [Keeper]). A release after d frees the key at
// once. A lock that was lost, or broken, is not kept.
//
// This is for jobs that several machines schedule at about the same time and
// that must run at most once per period, such as an hourly import started
// by cron on every server: without it, a job that finishes in seconds frees
// the key for a server whose clock or cron runs a few seconds late. Set d a
// little below the period (50m for an hourly job). Default 0. A negative
// value or one above [MaxTTL] fails with [ErrInvalidOption].
func WithMinHold(d time.Duration) Option {
	return func(o *options) {
		if d < 0 || d > MaxTTL {
			o.fail("%w: min hold %v is outside [0, %v]", ErrInvalidOption, d, MaxTTL)
		}
		o.minHold = d
	}
}

// WithLabel sets a free-form description of the holder, shown by inspection
// (for example a job name). Default empty.
func WithLabel(label string) Option { return func(o *options) { o.owner.Label = label } }

// WithOwner replaces the whole owner record. Default: this host's name and
// this process's pid. Set PID to 0 when the lock must outlive this process
// (the file backend otherwise frees a dead holder's lock at once).
func WithOwner(owner Owner) Option { return func(o *options) { o.owner = owner } }
