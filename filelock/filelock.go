// Package filelock is the dlock backend over a directory on one host: the
// default store of the dlock command, needing nothing installed. It excludes
// processes (and goroutines) of one machine that use the same directory; it
// does not work across machines, and not over NFS or other network file
// systems whose flock is emulated or local to one client.
//
// # Layout
//
// Each key has one file, named by the hex SHA-256 of the key plus ".lock",
// so every allowed key (slashes, "../x", spaces, Unicode, 1024 bytes) maps to
// a safe, distinct name inside the directory. The file holds one line of
// JSON:
//
//	{"key":"jobs/nightly","fence":7,"lock_id":"3f2a…","token_sha256":"…",
//	 "acquired_at":"…","expires_at":"…","owner":{"host":"web1","pid":4242,
//	 "start_ticks":98765,"pid_ns":"pid:[4026531836]","label":"backup"},
//	 "boot_id":"…","expires_mono_ns":123456789}
//
// The token itself is never stored, only its SHA-256, so a reader of the
// file cannot release or refresh the lock. After a release or a break only
// {"key":…,"fence":…} remains, keeping the fence. A key that had waiters
// also keeps "queue_next", the next ticket of its queue (see Waiting), and
// a free one "freed_mono_ns", when it was freed. The directory is created
// 0700 and files 0600: all processes sharing locks must run as the same user
// (or root) and agree on the directory. Cron jobs and services often have
// another environment than a login shell, so set DLOCK_DIR (or pass the
// directory, or the CLI's --backend URL) explicitly there.
//
// # Atomicity
//
// Every state change (acquire, refresh, release, break, cleanup) opens the
// key's file, takes an exclusive flock, checks that the file was not unlinked
// meanwhile (by a cleanup), reads, decides, writes in place and unlocks.
// Readers take a shared flock. flock locks belong to the open file, so the
// kernel frees them when a holder dies: no state is ever left half-changed by
// a crash between a read and a write.
//
// # Expiry and dead holders
//
// A lease ends at its TTL. On Linux expiry is measured on CLOCK_MONOTONIC,
// which wall-clock changes do not move; elsewhere on the wall clock. A holder
// that is provably dead — same host, same boot, same PID namespace, and its
// pid either gone, a zombie or now belonging to a process with another start
// time — frees its lease at once (see [WithDeadHolderTakeover]). A pid alone
// never counts as proof, since pids are reused. Locks taken with Owner.PID 0
// are not tied to a process and last until their TTL.
//
// # Waiting
//
// On Linux the Backend is a [dlock.Notifier] with a FIFO queue per key
// ([WithFIFO], on by default). A waiting acquire that is refused joins the
// queue in the same step: it takes a ticket, the record's queue_next, and
// holds an open-file-description read lock on a byte of the key file past
// the record, which the kernel drops when the waiter leaves or its process
// dies. A free key goes only to the first live ticket; every attempt,
// TryAcquire included, respects the queue. So under contention the key
// goes to the waiter that has waited longest, whatever its process.
//
// Each waiter is woken by the one ahead of it: every ticket listens on a
// Unix socket in the abstract namespace, and the waiter behind it connects
// and is woken when it closes (the waiter ahead was granted, gave up or
// died). Only the first two in line watch the key file itself, through
// inotify, for the releases and breaks that touch its times (and every
// 100ms, since a holder that dies writes nothing): a hand-over wakes one
// or two waiters, not every process that waits. A first in line that
// leaves the key free for 2s without taking it (a stopped process, a
// frozen container) is passed by the second, and by newcomers. Waiters
// that cannot reach the socket ahead of them (another network namespace)
// look every 100ms instead; a process that cannot get an inotify instance
// (Linux allows 128 per user by default, fs.inotify.max_user_instances) is
// woken by the 100ms poll alone.
//
// With WithFIFO(false) a Backend's waiters do not queue: each watches the
// key file and every release wakes them all, the first to look taking the
// key (still behind any queue other Backends formed). Elsewhere than Linux
// there is no queue and the core polls with backoff.
//
// # Fences
//
// Fences are sound: each grant of a key gets a fence greater than every
// earlier grant of that key, across processes, releases, cleanups and
// restarts, because the fence lives in the key's file and cleanup raises a
// directory-wide floor (the file .fence-floor) before it deletes a file.
// Deleting .fence-floor or key files by hand breaks this guarantee. Without
// [WithSync] the files are not fsynced: fences survive process crashes and
// restarts but not a power loss or kernel crash.
//
// Records are updated in place. A record that cannot be parsed makes the
// operations on its key fail with an error wrapping [dlock.ErrCorrupt]; the
// file is never overwritten, since its fence would be lost. Remove it by
// hand once no process uses the key.
//
// # Platforms
//
// Linux is the target. Other Unix systems work with wall-clock expiry and no
// dead-holder takeover; elsewhere [New] returns an error wrapping
// errors.ErrUnsupported.
package filelock

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/dlock-dev/dlock"
)

// Option configures a [Backend] in [New].
type Option func(*options)

type options struct {
	takeover bool
	sync     bool
	fifo     bool
}

func defaultOptions() options { return options{takeover: true, fifo: true} }

// WithDeadHolderTakeover sets whether Acquire may take over a lease at once
// when its holder is provably dead on this host (pid and process start time,
// same boot and PID namespace). Default true. With false, a crashed holder's
// lease lasts until its TTL. Cleanup, Inspect, List and Stats follow the same
// setting.
func WithDeadHolderTakeover(on bool) Option { return func(o *options) { o.takeover = on } }

// WithFIFO sets whether waiting acquires of this Backend join the key's
// FIFO queue (Linux only; elsewhere there is no queue). Default true: a
// free key goes to the waiter that has waited longest, and a release wakes
// that one waiter, in whatever process, rather than every one. With false
// its waiters are all woken at every release and the first to look takes
// the key, which gives more grants per second under contention within
// one process but no fairness. Every attempt, whatever this setting,
// respects a queue that others joined.
func WithFIFO(on bool) Option { return func(o *options) { o.fifo = on } }

// WithSync sets whether every write is followed by fsync (and the directory
// synced when files are created or removed), so that records and fences
// survive a power loss or kernel crash. Default false: they then survive
// crashes and restarts of processes, which is what most uses need, at a
// fraction of the cost.
func WithSync(on bool) Option { return func(o *options) { o.sync = on } }

// DefaultDir returns the per-user directory the dlock command uses when no
// backend is given: $DLOCK_DIR if set; else "dlock" in the user's cache
// directory (os.UserCacheDir: $XDG_CACHE_HOME or ~/.cache on Linux); else, if
// there is none (no $HOME), dlock-UID in os.TempDir(), which it creates 0700
// and refuses if another user owns it. It does not create the other two:
// [New] does. Processes that share locks must get the same answer, so set
// DLOCK_DIR where environments differ (cron, systemd units, sudo).
// Errors wrap [dlock.ErrUnavailable].
func DefaultDir() (string, error) {
	if d := os.Getenv("DLOCK_DIR"); d != "" {
		return d, nil
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "dlock"), nil
	}
	// A shared temporary directory: anyone may have created this name
	// first, so create it ourselves and accept it only if it is ours.
	d := filepath.Join(os.TempDir(), fmt.Sprintf("dlock-%d", os.Getuid()))
	if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("filelock: default directory: %w: %w", dlock.ErrUnavailable, err)
	}
	if err := checkPrivateDir(d); err != nil {
		return "", err
	}
	return d, nil
}
