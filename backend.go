package dlock

import (
	"context"
	"time"
)

// Backend is the contract a store implements. The core ([Client], [Lock])
// owns everything else: validation, tokens, waiting, refreshing and the lost
// signal. Rules for implementers:
//
//   - Every method must honour ctx and return within its deadline. Transport
//     failures wrap [ErrUnavailable]; a context error is returned as is
//     (wrapped), so errors.Is sees context.Canceled or DeadlineExceeded.
//   - Each method is one atomic step in the store: no other caller can see
//     or act on a state between its reads and its writes.
//   - Keys and TTLs arrive validated by the core; a backend that cannot
//     represent a TTL (coarse expiry) returns an error wrapping [ErrInvalidTTL].
//   - Fences grow strictly with every grant of a key, across processes and
//     cleanup, within the limits the backend documents.
//   - A backend never returns a token in a Record, and never deletes or
//     extends a lease whose token does not match.
//   - A lease whose expiry has passed is free: Acquire may take it over,
//     Refresh and Release of it return [ErrNotHeld], and Inspect and List do
//     not report it.
//
// Optional abilities are separate interfaces ([Lister], [StatsReporter],
// [Cleaner], [Breaker], [Notifier], [Keeper], [QueueReporter]) that the
// core finds with a type assertion, the way database/sql finds optional
// driver interfaces.
type Backend interface {
	// Acquire grants req.Key to req.Token if it is free (never held, released
	// or expired). On a grant it returns the new record and granted=true. If a
	// live lease holds the key it returns the holder's record and
	// granted=false with a nil error: contention is not a failure.
	Acquire(ctx context.Context, req AcquireRequest) (rec Record, granted bool, err error)

	// Refresh extends the lease of key to ttl from now if token still holds
	// it, returning the updated record, else an error wrapping ErrNotHeld.
	// The fence does not change. On a [Notifier], a refresh that ends the
	// lease sooner than before wakes the key's waiters, who sleep until
	// the expiry they were told of.
	Refresh(ctx context.Context, key, token string, ttl time.Duration) (Record, error)

	// Release frees key if token holds it, else returns an error wrapping
	// ErrNotHeld. It compares and deletes in one step, never blindly.
	Release(ctx context.Context, key, token string) error

	// Inspect returns the live lease of key, with found=false if there is
	// none.
	Inspect(ctx context.Context, key string) (rec Record, found bool, err error)
}

// AcquireRequest is what the core asks a backend to store on a grant.
type AcquireRequest struct {
	Key    string
	Token  string // secret, 32 hex digits; proves ownership
	LockID string // public id derived from Token, safe to show
	TTL    time.Duration
	Owner  Owner
}

// Lister is a Backend that can enumerate live leases.
type Lister interface {
	// List returns the live leases whose keys start with prefix ("" for
	// all), sorted by key.
	List(ctx context.Context, prefix string) ([]Record, error)
}

// StatsReporter is a Backend that can count its records. Held is left to
// the core.
type StatsReporter interface {
	Stats(ctx context.Context) (Stats, error)
}

// Cleaner is a Backend that can remove records of expired leases. It must
// never remove a live lease, even when a holder re-acquires while it runs,
// and must keep fences growing after the removal.
type Cleaner interface {
	// Cleanup removes expired records and returns how many it removed.
	Cleanup(ctx context.Context) (int, error)
}

// Breaker is a Backend that lets an administrator free a key whatever its
// token. The former holder's Refresh and Release then fail with ErrNotHeld.
type Breaker interface {
	// Break frees key and returns the lease it broke, with found=false if the
	// key was free.
	Break(ctx context.Context, key string) (rec Record, found bool, err error)
}

// QueueReporter is a Backend with FIFO queues that can count the waiters in
// one: they are queued for the key, not holding it, so Inspect does not
// show them.
type QueueReporter interface {
	// Waiting returns how many waiting acquires are queued for key (0 if
	// none, or if the key has no queue).
	Waiting(ctx context.Context, key string) (int, error)
}

// Keeper is a Backend with more to do than a refresh when a lease is kept
// for [WithMinHold] after its holder released it. Keep sets the lease of
// key to ttl from now, as Refresh does, and besides:
//
//   - detaches the lease from the holder's process where leases depend on
//     one (the file backend frees a provably dead holder's key at once), so
//     that it lasts until ttl from now whatever becomes of the process;
//   - wakes the key's waiters, as a release does, if the lease now ends
//     sooner than before: a waiter that was refused sleeps until the expiry
//     it was told of, unless woken.
//
// It returns an error wrapping ErrNotHeld if token does not hold a live
// lease on key. On a backend that is not a Keeper the core uses Refresh.
type Keeper interface {
	Keep(ctx context.Context, key, token string, ttl time.Duration) error
}

// Notifier is a Backend that can tell waiters when a key may have become
// free, so that they are woken instead of polling.
type Notifier interface {
	// Subscribe starts watching key. A waiting [Client.Acquire] subscribes
	// once its first attempt was refused, so that an uncontended Acquire
	// costs no subscription. The returned channel receives a value (it is
	// buffered; sends never block) after any release, break or cleanup of
	// key that happens after that refusal: a backend that cannot tell
	// whether one happened between the refusal and the subscription puts a
	// value in the channel at once, and the waiter looks again. Spurious
	// wake-ups are allowed. Expiry need not be signalled: the core also
	// wakes at the holder's expiry, or at the refusal's [Record.NextLook]
	// if the backend set it (and then the backend must wake the waiter when
	// it should look before that). cancel stops watching and must be
	// called.
	//
	// The context of a Subscribe, and of every Acquire call the same waiting
	// [Client.Acquire] makes, carries the lock id it asks for (see
	// [WaitingLockID]), so that a backend can tie the subscription to the
	// attempts it wakes: a FIFO queue wakes exactly the waiter whose turn
	// it is. A wait that rides out a store outage starts again with a
	// fresh lock id, and subscribes again with it.
	Subscribe(ctx context.Context, key string) (changed <-chan struct{}, cancel func(), err error)
}

// Drainer is a Backend whose calls may go on in the background after
// their caller left (a store client that takes no context runs each call
// on a goroutine of its own), and which then undoes an acquire that
// landed after its caller left. Drain waits until none is running, or ctx
// ends (its cause is returned then). [Client.Drain] calls it.
type Drainer interface {
	Drain(ctx context.Context) error
}

type waitingKey struct{}

// WaitingLockID returns the lock id that the waiting [Client.Acquire] that
// made ctx asks for, if ctx was made by one. The core makes such a context
// only for a backend that is a [Notifier], and passes it to
// [Notifier.Subscribe] and to each of that wait's [Backend.Acquire] calls.
// A backend can thus tell a waiter's attempt (ok and id equal to the
// request's LockID) from a one-shot TryAcquire.
func WaitingLockID(ctx context.Context) (id string, ok bool) {
	id, ok = ctx.Value(waitingKey{}).(string)
	return id, ok
}
