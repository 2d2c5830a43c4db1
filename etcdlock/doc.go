// Package etcdlock is the dlock backend over etcd v3, through the official
// client (go.etcd.io/etcd/client/v3) your program already has. etcd
// replicates every write through Raft before it answers, so of dlock's
// network backends this is the one whose locks and fences survive the loss
// of a member, a leader election and a restart: use it where a lock
// protects data.
//
//	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"localhost:2379"}})
//	b, err := etcdlock.New(cli)     // etcdlock.WithPrefix("myapp/locks/")
//	defer b.Close()                 // leaves the queues; cli stays yours
//	c := dlock.New(b)
//
// # What is stored
//
// Under the prefix P ([WithPrefix], default "dlock/"), a lock on key is the
// etcd key P+"lock/"+key, attached to an etcd lease of its own. Its value is
// JSON: the key, the lock id, the SHA-256 of the token (never the token),
// the acquisition time (the acquirer's clock), the lease's TTL in seconds
// and the owner. Waiters queue under P+"queue/"+key+"\x00", one ticket
// each. While a free key waits for its first in line, P+"promise/"+key
// says until when (see the queue below). Nothing else is written, and
// nothing outlives its lease.
//
// # Operations
//
// Every state change is one etcd transaction, so no client can act on a
// state another changed in between:
//
//   - Acquire first reads the lock key and the head of its queue, so that
//     a refused attempt writes nothing (etcd writes go through Raft and to
//     disk), but the promise below. If the key is free and nobody queues for it, it grants a lease
//     and, in one transaction, writes the lock key on it if that still
//     holds; the fence is the revision of that transaction, the key's
//     create revision. A refused attempt reads the holder's remaining TTL.
//   - Refresh renews the key's lease with one keep-alive, after reading the
//     key to check the token unless this backend granted that lease itself
//     (it remembers its grants by token). etcd cannot change a lease's TTL,
//     so a refresh with a TTL of another number of seconds (as
//     [dlock.WithMinHold] makes at the release) moves the key to a new lease
//     in a transaction that checks it is still on the old one; the fence
//     does not change.
//   - Release revokes the key's lease, which deletes the key with it, after
//     the same check of the token.
//   - Break revokes the lease whatever the token. It revokes rather than
//     deletes: a holder's refresh is a keep-alive of the lease, and one that
//     came between a delete and a revocation would tell the holder it still
//     held a free key.
//   - Inspect and List read the keys and ask etcd for each lease's time to
//     live. Stats counts the keys. There is no Cleanup: etcd deletes a key
//     when its lease ends.
//
// # TTLs and clocks
//
// Expiry is etcd's: the leader ends a lease when its TTL has passed on the
// leader's clock since the grant or the last keep-alive, and no client
// clock matters. etcd leases count whole seconds, so a TTL is rounded up to
// the next second, and etcd raises TTLs below its minimum (1.5 election
// timeouts, rounded up: 2 s with the default settings) to it. The holder
// still believes its lock for the TTL it asked for (from the moment it
// sent the request, less the drift margin), so rounding up never shortens a
// lease; others see the key held until etcd ends the lease, up to a second
// or two later. A new leader renews every lease to its full TTL. Inspect
// reports expiry as etcd does, to the second, rounded up.
//
// # Fences
//
// The fence is the grant's etcd revision, which grows with every write to
// the cluster and is kept by Raft and on disk: strictly greater than every
// earlier grant's across members, leader elections and restarts. It
// repeats only if the cluster loses its data (a new cluster on the same
// endpoints, or a restore from a backup without `etcdutl snapshot restore
// --bump-revision`). This is the sound fence of DESIGN.md.
//
// # Waiting
//
// Waiters queue in arrival order (FIFO) and are woken by etcd watches, not
// by polling:
//
//   - A blocking [dlock.Client.Acquire] that is refused puts a ticket in
//     the key's queue in the same transaction. Tickets are attached to the
//     backend's session lease (5 s, kept alive while the backend lives), so
//     the tickets of a process that dies go within 5 s.
//   - A free key goes only to the oldest ticket: the granting transaction
//     checks that the waiter's ticket exists and no ticket is older, and
//     deletes the ticket as it writes the lock. A TryAcquire respects the
//     queue without joining it: it is refused while a waiter is in line,
//     and names that waiter as the holder, until the promise lapses.
//   - The promise: the first attempt to find the key free but promised to
//     the first in line writes P+"promise/"+key, on its session lease,
//     saying when it lapses (2 s on; every grant deletes it). After that,
//     any attempt may take the key. A first in line that does not come (a
//     stuck process whose session lives on, or a stream of waits each
//     shorter than a hand-over, every first in line giving up before its
//     turn) thus holds the key up 2 s at most. The moment is the writer's
//     clock: skew between clients moves the bound, never safety.
//   - Each waiter watches only the ticket just ahead of its own, and once
//     first in line, the lock key. A release, break or expiry (etcd deletes
//     the key when the lease ends) thus wakes the first in line, which
//     takes the key, and the waiter behind it, which moves up: two waiters
//     in the whole cluster, whatever the length of the queue. A wait's
//     first watch starts at the revision of its refusal, so nothing in
//     between is missed; later ones start from now, before the read that
//     says whether what they watch is still there, since etcd serves a
//     watch that starts in the past from a catch-up loop that runs every
//     100ms. etcd's client resumes watches after a reconnection.
//   - A waiter whose context ends deletes its ticket at once; [Backend.Close]
//     revokes the session, which deletes all of the backend's tickets.
//
// # Failures
//
// The etcd client waits for a reachable member rather than failing at
// once, so every operation is bounded by [WithTimeout] (default 5 s) when
// its context has no earlier deadline. A cluster that does not answer
// within it gives [dlock.ErrUnavailable]; the caller's own deadline gives
// its context error. An acquire whose transaction may have landed after
// its caller stopped waiting revokes its lease, which frees the key if it
// was written. Keys, leases and revisions survive a restart: a holder's
// refresh works again once a member answers, if its lease has not ended
// meanwhile. Data lost (a new cluster) means leases lost: the holder's next
// refresh fails with [dlock.ErrNotHeld] and its lost signal fires.
//
// # Compatibility
//
// The keys are dlock's own: etcd's concurrency.Mutex and etcdctl lock use
// another layout, and do not exclude dlock's locks on the same name.
package etcdlock
