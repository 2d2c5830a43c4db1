package dlock

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Compare with errors.Is: functions wrap them with context.
var (
	// ErrNotAcquired reports that a lock was not granted: the key is held by
	// someone else, or waiting ended. See [NotAcquiredError] for the holder.
	ErrNotAcquired = errors.New("dlock: lock not acquired")

	// ErrNotHeld reports a refresh or release by a caller that does not hold
	// the lock: wrong token, the lease expired or was broken, or the lock was
	// already released.
	ErrNotHeld = errors.New("dlock: lock not held")

	// ErrLockLost is the cause of a lock's Done signal when the lock stopped
	// being held before it was released: a refresh failed, validity passed or
	// the maximum hold time was reached.
	ErrLockLost = errors.New("dlock: lock lost")

	// ErrMaxHold wraps ErrLockLost when the watchdog gave up the lock because
	// the maximum hold time set with [WithMaxHold] was reached.
	ErrMaxHold = fmt.Errorf("%w: maximum hold time reached", ErrLockLost)

	// ErrRetriesExhausted is the Cause of a [NotAcquiredError] when the
	// [RetryStrategy] stopped a wait (returned 0).
	ErrRetriesExhausted = errors.New("dlock: retry strategy gave up")

	// ErrReleased is the cause of a lock's Done signal after [Lock.Release].
	ErrReleased = errors.New("dlock: lock released")

	// ErrInvalidKey reports a key that breaks the rules of [ValidateKey].
	ErrInvalidKey = errors.New("dlock: invalid key")

	// ErrInvalidTTL reports a TTL outside [MinTTL, MaxTTL] or one the
	// backend cannot honour.
	ErrInvalidTTL = errors.New("dlock: invalid ttl")

	// ErrInvalidOption reports an option value that makes no sense, such as
	// a negative wait.
	ErrInvalidOption = errors.New("dlock: invalid option")

	// ErrUnavailable reports that the store could not be reached or did not
	// answer in time. Backends wrap their transport errors with it.
	ErrUnavailable = errors.New("dlock: store unavailable")

	// ErrClosed reports a call through a backend, or a store client, that
	// was closed. It matches ErrUnavailable too, but unlike other such
	// errors it will not pass, so a waiting Acquire does not wait it out.
	ErrClosed = fmt.Errorf("%w: closed", ErrUnavailable)

	// ErrCorrupt reports a stored record that cannot be understood. The
	// backend does not overwrite it, since its fence would be lost.
	ErrCorrupt = errors.New("dlock: corrupt lock record")

	// ErrUnsupported reports an optional operation the backend lacks. It
	// also matches errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("dlock: %w by this backend", errors.ErrUnsupported)
)

// NotAcquiredError is returned when a lock was not granted. It matches
// [ErrNotAcquired] and, when waiting was cut short, its Cause (for example
// context.Canceled or context.DeadlineExceeded), so callers can tell
// contention from cancellation.
type NotAcquiredError struct {
	Key string
	// Holder is the holder last seen, if the store reported one. It never
	// carries the holder's token.
	Holder *Record
	// Cause is why waiting stopped; nil when the caller did not wait.
	Cause error
}

func (e *NotAcquiredError) Error() string {
	msg := fmt.Sprintf("dlock: lock %q not acquired", e.Key)
	if h := e.Holder; h != nil {
		msg += ": held by " + h.describe(time.Now())
	}
	if e.Cause != nil {
		msg += ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap lets errors.Is match both ErrNotAcquired and the cause.
func (e *NotAcquiredError) Unwrap() []error {
	if e.Cause == nil {
		return []error{ErrNotAcquired}
	}
	return []error{ErrNotAcquired, e.Cause}
}
