// Package dlock is the core of a distributed lock library: leases with
// tokens, fencing numbers, validity measured on the caller's monotonic clock
// and a lost-lock signal, over any store that implements the small [Backend]
// contract.
//
// A [Client] wraps one backend. [Client.TryAcquire] asks once,
// [Client.Acquire] waits (woken by the store when the backend is a
// [Notifier], else on a [RetryStrategy]), and [Client.Do] runs a function
// under a lock that is refreshed while the function runs and released when it
// returns or panics. A held [Lock] exposes its fence, its remaining validity
// and Done/Context, which fire the moment the lock can no longer be assumed
// held.
//
// Everything that is the same for every store lives here, written once:
// validation of keys and TTLs, token generation, waiting, the watchdog, the
// lost signal, bookkeeping for [Client.ReleaseAll], the give-back of an
// acquire whose outcome is unknown ([Client.Drain] waits for it) and error
// mapping. Backends (packages memlock, filelock, ...) implement only atomic primitives.
//
// # Safety
//
// A lock is a lease. The caller believes it holds the lock until
// sent + ttl - drift, where sent is the monotonic time at which the acquire
// or refresh request was sent, never the time the reply arrived. A holder that
// stalls past that point has lost the lock whether it notices or not; protect
// the resource itself with [Lock.Fence], a number that grows with every grant
// of a key, where the backend's fence is sound (see each backend's docs).
package dlock
