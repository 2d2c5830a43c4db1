// Package memcachelock is the dlock backend over memcached. It is an
// efficiency lock, not a correctness lock: memcached is a cache and may
// forget a lock at any time (a restart, flush_all, or eviction under memory
// pressure), and its fences are best effort. Use it to keep processes from
// doing the same work twice; protect data whose corruption matters with a
// backend whose fence is sound (filelock on one host; see the README's
// guarantees table).
//
// # Client and atomicity
//
// It uses github.com/bradfitz/gomemcache, the Go ecosystem's standard,
// maintained memcached client, over the text protocol (memcached 1.4.31 or
// later; tested with 1.6). Every state change is a single conditional write,
// so no client can act on a state another changed in between:
//
//   - Acquire: "gets" the key's item; if there is none, "add" (fails if any
//     client added first); if the item holds a released or expired lease,
//     "cas" over it (fails if any client changed it since the read). A live
//     lease is reported as the holder.
//   - Refresh: "gets", check the token and expiry, "cas" with the new expiry.
//   - Release and Break: "gets", check, then "cas" to a released record
//     that keeps the fence. A release never removes a lease acquired after
//     its read. (A compare-and-delete, "cas" with a negative exptime or the
//     meta protocol's "md key C<cas>", would free the item too, but then the
//     fence would be lost with it; see Fences.)
//
// A lost race (the add or cas is refused) starts the operation over.
//
// # Keys
//
// memcached keys are at most 250 bytes without whitespace or control
// characters. A dlock key is stored as prefix + "lk:" + base64url(key) when
// that fits, else prefix + "lh:" + hex(SHA-256(key)). Every valid dlock key
// works, two keys never share an item, and the value holds the original
// key, so Inspect and List show it. The prefix ([WithPrefix], default "dlock:") separates
// namespaces on a shared server.
//
// # Items
//
// The item's value is JSON: the key, lock id, fence, acquisition and
// expiry times, owner, and the SHA-256 of the token (never the token); after
// a release or break, only the key, the fence and "released". Released
// records expire after 30 days, so a key that is never used again costs
// memory until then (or until memcached evicts it). A value that is not such
// a record makes operations on its key fail with [dlock.ErrCorrupt]; it is
// not overwritten.
//
// # TTLs and clocks
//
// memcached expires items in whole seconds, treats 0 as "never" and reads
// values over 30 days as absolute Unix times. The backend therefore stores
// the exact expiry (the writer's wall clock + TTL) in the value and judges
// liveness by it: a lease whose stored expiry has passed is free even while
// memcached still holds its item. The item itself gets an exptime rounded
// up to whole seconds plus one, so memcached never drops a live lease early
// (it lingers up to two seconds after expiry, harmlessly), and an absolute
// time beyond 30 days, so every TTL from [dlock.MinTTL] to [dlock.MaxTTL]
// works, sub-second ones included. TTLs that would end after January 2038
// (memcached's 32-bit expiry) are refused with [dlock.ErrInvalidTTL].
//
// Judging by stored expiry compares wall clocks of different clients:
// a client whose clock runs ahead by d sees other clients' leases end d
// early. The core's drift margin (1% of the TTL + 2ms) absorbs small
// offsets; keep clients on NTP and TTLs long compared with their clock
// offsets. A client whose clock lags is safe: it frees leases late, and
// memcached's own exptime still ends them.
//
// # Fences
//
// The fence lives in the lock item and is computed from the item read:
// above its fence and at least the current Unix time in microseconds. The
// grant's add or cas fails if the item changed, so the fence is above that
// of every grant the item has recorded, and releases keep the item. When
// the item is lost (eviction, restart, flush_all, a crashed holder's lease
// dropped by memcached two seconds after expiry, or a released record's
// 30-day expiry) the next fence comes from the clock, so fences still grow
// as long as the clients' clocks do not step back, unless a client stalls
// between reading "no item" and writing for longer than the lost item had
// left to live. That is best effort, not a guarantee: fences from this
// backend are NOT sound and must not be what protects data.
//
// # Failures
//
// Transport failures (refused or broken connections, timeouts, SERVER_ERROR)
// wrap [dlock.ErrUnavailable]. gomemcache takes no context, so each call
// runs in a goroutine and returns the context's error as soon as ctx ends;
// the abandoned call finishes in the background within [WithTimeout]. An
// acquire whose write lands after its caller left is released then (the
// caller's own give-back may have found nothing yet); [Backend.Drain], or
// dlock's Client.Drain, waits for those calls before a program exits. After
// a restart or flush_all all leases are gone: the holder's next refresh
// fails with [dlock.ErrNotHeld] and its lost signal fires (the first call
// after a restart may fail with ErrUnavailable on a stale connection).
// Meanwhile another client may already have taken the key.
//
// # Several servers
//
// With several servers each key lives on one, chosen by a CRC32 hash of its
// item key modulo the number of servers in the order given. There is no
// replication and no failover: if a server is down its keys are unavailable
// (never silently moved), which keeps exclusion. Every client must list the
// same servers in the same order; changing the list moves keys, and a lock
// held under the old list is invisible under the new one.
//
// # Inspection
//
// memcached cannot enumerate keys. [Backend.List] and [Backend.Stats] walk
// every item with "lru_crawler metadump hash" (falling back to "all" on
// servers without it): best effort, costly on a large shared cache, and
// refused ([dlock.ErrUnsupported]) where the crawler is disabled. There is
// no Cleanup: memcached drops expired items itself within two seconds. There
// is no push notification either: waiters poll with the core's backoff, cut
// short at the holder's expiry.
package memcachelock
