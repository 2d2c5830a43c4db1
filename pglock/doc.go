// Package pglock is the dlock backend over PostgreSQL, through the pgx
// connection pool (github.com/jackc/pgx/v5/pgxpool) a Go program that uses
// PostgreSQL usually has already. Locks then need no other server, and
// they are as durable as the database: they survive a restart of the
// server and of every client.
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db.internal/app")
//	b, err := pglock.New(pool)     // pglock.WithTable("dlock_locks")
//	defer b.Close()                // stops the listening connection; pool stays yours
//	c := dlock.New(b)
//
// # What is stored
//
// One row per key in a table ([WithTable], default "dlock_locks") that the
// backend creates on first use, beside a sequence for fences
// (dlock_locks_fence) and a table of void tokens (dlock_locks_void, see
// below). A row holds the key, the SHA-256 of the holder's token (never the
// token), the lock id, the fence, the times of the grant and of the expiry
// on the server's clock, and the owner (host, pid, label). A released or
// broken lease's row is deleted; an expired one stays until an acquire
// takes the key over or [Backend.Cleanup] removes it.
//
// To create the table ahead of time (when the role that locks may not
// create tables), run [Backend.Setup] once with a role that may. The
// locking role then needs SELECT, INSERT, UPDATE and DELETE on the two
// tables and USAGE on the sequence.
//
// # Operations
//
// Every operation is one SQL statement, so PostgreSQL runs it atomically,
// and one round trip; pgx prepares each statement once per connection.
// Acquire, and a release that finds nothing to free, run after a statement
// that takes a transaction-scoped advisory lock on the key, in the same
// transaction and round trip (a pipeline), so that they read what was
// committed before they got the lock.
//
//   - Acquire inserts the row (INSERT ... ON CONFLICT DO NOTHING), or
//     takes over the row of an expired lease (UPDATE ... WHERE expired,
//     checked again on the row's newest version). A refused acquire
//     changes and locks no row, so on a durable server it costs no flush
//     to disk, and returns the holder's row. The fence is drawn from the
//     sequence under the key's advisory lock, so that grants of one key
//     draw their fences in the order they are granted. An acquire that
//     finds a live lease takes no lock: it can only be refused.
//   - Refresh moves the expiry if the token holds a live lease.
//   - Release deletes the row if the token holds a live lease. A release
//     whose token does not hold the key asks again under the key's lock:
//     it deletes the lease if the token's acquire committed meanwhile,
//     and otherwise marks the token void for ten minutes, so that an
//     acquire with that token still on its way (its caller gave up on it
//     and released, as dlock does after a timeout) is refused when it
//     lands, instead of taking a lease nobody holds.
//   - Break deletes a live lease whatever its token; Cleanup deletes
//     expired leases, and void marks and waiters past their time.
//   - Inspect, List and Stats read the table.
//
// # TTLs and clocks
//
// Expiry is decided by the server's clock (clock_timestamp()) to the
// microsecond, and the backend reports times to the caller as durations
// from the server's now, placed on the caller's clock: no client clock
// has to agree with the server's. The holder's validity runs on its own
// monotonic clock from the moment it sent the request, as for every dlock
// backend.
//
// # Fences
//
// Fences come from one sequence per table: they grow strictly with every
// grant of a key, across restarts of the server (a sequence never goes
// back after a crash; it may skip numbers) and across Cleanup (the
// sequence is never reset). They can repeat only if the database itself
// goes back in time: a failover to an asynchronous replica that had not
// received the last grants, or a restore from a backup. With synchronous
// replication (synchronous_commit on and a synchronous standby), a
// failover keeps them growing.
//
// # Waiting
//
// The backend is a [dlock.Notifier]: a release, a break, a cleanup and a
// refresh that shortens a lease send a NOTIFY on the channel "dlock:" +
// table, with the key as payload, and each backend that has waiters keeps
// one connection of the pool in LISTEN. A backend whose waiter is refused
// enters the key's waiters (a row per key and backend in the table's
// "_waiters" table), and a release's notification names the two backends
// that have waited longest: one waiter of the first looks at once, one of
// the second after a short head start (the first may have died), and the
// other backends' waiters only if no other release of the key follows
// within a second. So a hand-over costs one or two looks however many
// processes wait. A granted backend with more waiters goes to the back of
// the line, so processes take turns. Within a backend, a notification
// wakes the waiter that has waited longest; a waiter that leaves before it
// looks again hands its wake-up on. When the listening connection fails it reconnects, and once
// it listens again every waiter looks again, for the releases it missed.
// Waiters also look again at the holder's expiry. The listening connection
// is taken out of the pool while there are waiters (and for a second
// after the last one leaves), so a waiting process uses two connections;
// when a statement finds the server full, the listening connection gives
// its slot up until a statement gets one again. LISTEN needs a session:
// point the pool at PostgreSQL or at a pooler in session mode (PgBouncer
// in transaction mode does not deliver notifications; waiters then wake
// only at the holder's expiry; statement mode does not work at all, since
// an acquire is two statements in one transaction).
//
// The order is not strict FIFO: a free key goes to whoever reaches the
// server first, and an acquire that does not wait can take it before the
// named waiter.
//
// # Failures
//
// Each operation is bounded by [WithTimeout] (default 5s) unless the
// caller's deadline is sooner. A server that refuses a connection for now
// (all its connection slots taken, as when many dlock processes start at
// once, or starting up) is asked again, with a growing pause, within that
// bound: nothing was sent. An acquire waits for a slot at most half its
// TTL, since its validity counts from before the request; a waiting
// acquire that got none waits on and asks again. A server that is down, a connection that
// breaks and an error the server answers with (a missing privilege, a
// read-only standby) fail with [dlock.ErrUnavailable]; the caller's own
// context error is returned as it is. A held lock whose refreshes fail
// fires its lost signal when its validity ends.
package pglock
