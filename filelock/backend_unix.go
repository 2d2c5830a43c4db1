//go:build unix && !aix

package filelock

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

// Backend stores locks as files in one directory. It is safe for concurrent
// use by goroutines, and any number of Backends in any number of processes
// may share the directory. Create it with [New].
type Backend struct {
	dir   string
	floor string // path of .fence-floor
	opts  options

	// Who we are, for recording owners and for the dead-holder check.
	host      string
	boot      string // boot id, "" where unknown
	pidNS     string
	selfPID   int
	selfStart uint64 // 0: unknown, and then no takeover at all
	hints     parseHints

	fds   fdCache
	watch watcher // wakes waiters (Linux)
	queue queue   // this Backend's waiters in FIFO queues (Linux)
}

var (
	_ dlock.Backend       = (*Backend)(nil)
	_ dlock.Lister        = (*Backend)(nil)
	_ dlock.StatsReporter = (*Backend)(nil)
	_ dlock.Cleaner       = (*Backend)(nil)
	_ dlock.Breaker       = (*Backend)(nil)
	_ dlock.Keeper        = (*Backend)(nil)
	_ dlock.QueueReporter = (*Backend)(nil)
)

// New returns a backend over dir, creating it (and missing parents) 0700.
// It fails, with an error naming the path and wrapping
// [dlock.ErrUnavailable], if dir cannot be created, is not a directory or
// is not writable; an empty dir wraps [dlock.ErrInvalidOption].
func New(dir string, opts ...Option) (*Backend, error) {
	if dir == "" {
		return nil, fmt.Errorf("filelock: %w: empty directory path", dlock.ErrInvalidOption)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("filelock: directory %s: %w: %w", dir, dlock.ErrUnavailable, err)
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("filelock: directory %s: %w: %w", dir, dlock.ErrUnavailable, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("filelock: %s is not a directory: %w", dir, dlock.ErrUnavailable)
	}
	b := &Backend{
		dir:     dir,
		floor:   filepath.Join(dir, floorName),
		opts:    o,
		boot:    bootID(),
		pidNS:   pidNamespace(),
		selfPID: os.Getpid(),
	}
	b.host, _ = os.Hostname()
	if t, zombie, err := procStart(b.selfPID); err == nil && !zombie {
		b.selfStart = t
	}
	b.hints = parseHints{host: b.host, boot: b.boot, pidNS: b.pidNS}
	// Creating the floor file proves the directory is writable (access(2)
	// would not: it says yes to root on a read-only mount) and is needed by
	// the first cleanup anyway.
	fd, err := unix.Open(b.floor, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filelock: directory %s is not writable: %w: %w", dir, dlock.ErrUnavailable, &fs.PathError{Op: "open", Path: b.floor, Err: err})
	}
	unix.Close(fd)
	if o.sync {
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("filelock: directory %s: %w: %w", dir, dlock.ErrUnavailable, err)
		}
	}
	return b, nil
}

// Dir returns the directory the backend uses.
func (b *Backend) Dir() string { return b.dir }

// Close closes the file descriptors the backend keeps open between calls.
// The backend stays usable (it then opens files on each call); Close exists
// for programs that create many backends.
//
// Waiting acquires of this backend leave their FIFO queues, and later ones
// wait without joining one.
func (b *Backend) Close() error {
	b.leaveAll()
	b.watch.stopIdle()
	b.fds.close()
	return nil
}

// instant is a reading of both clocks.
type instant struct {
	wall time.Time
	mono int64 // CLOCK_MONOTONIC ns, 0 where unknown
}

func (b *Backend) now() instant {
	now := instant{wall: time.Now()}
	if b.boot != "" {
		now.mono = monoNanos()
	}
	return now
}

// monoClock reports whether r's expiry is judged on CLOCK_MONOTONIC.
func (b *Backend) monoClock(r *fileRecord, now instant) bool {
	return b.boot != "" && now.mono != 0 && r.BootID != ""
}

// live reports whether r is a lease that still holds its key: not expired
// and, with takeover on, its holder not provably dead.
func (b *Backend) live(r *fileRecord, now instant) bool {
	if !r.held() {
		return false
	}
	if b.monoClock(r, now) {
		if r.BootID != b.boot || now.mono >= r.ExpiresMono {
			return false
		}
	} else if !now.wall.Before(r.ExpiresAt) {
		return false
	}
	return !b.holderDead(r)
}

// holderDead reports whether r's holder is provably dead: on this host and
// boot, in our PID namespace, with a pid that is gone, a zombie, or now
// another process (another start time). Anything unknown means alive.
func (b *Backend) holderDead(r *fileRecord) bool {
	o := &r.Owner
	if !b.opts.takeover || b.selfStart == 0 || o.PID <= 0 || o.StartTicks == 0 ||
		b.host == "" || o.Host != b.host || b.boot == "" || r.BootID != b.boot ||
		b.pidNS == "" || o.PIDNS != b.pidNS {
		return false
	}
	if o.PID == b.selfPID {
		// We are alive; the same pid with another start time was an
		// earlier process.
		return o.StartTicks != b.selfStart
	}
	ticks, zombie, err := procStart(o.PID)
	if errors.Is(err, errNoProcess) {
		return true
	}
	return err == nil && (zombie || ticks != o.StartTicks)
}

// public converts r to what callers see. ExpiresAt is recomputed from the
// monotonic clock, so that it agrees with this process's clocks (and carries a
// monotonic reading) even if the wall clock moved since r was written.
func (b *Backend) public(r *fileRecord, now instant) dlock.Record {
	exp := r.ExpiresAt
	if b.monoClock(r, now) && r.BootID == b.boot {
		exp = now.wall.Add(time.Duration(r.ExpiresMono - now.mono))
	}
	return dlock.Record{
		Key:        r.Key,
		LockID:     r.LockID,
		Fence:      r.Fence,
		AcquiredAt: r.AcquiredAt,
		ExpiresAt:  exp,
		Owner:      dlock.Owner{Host: r.Owner.Host, PID: r.Owner.PID, Label: r.Owner.Label},
	}
}

func tokenHash(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

func (r *fileRecord) heldBy(hash *[sha256.Size]byte) bool {
	return r.held() && subtle.ConstantTimeCompare(r.TokenHash[:], hash[:]) == 1
}

// lockRecord locks key's file and reads its record. The caller must call
// b.unlockFile(&f) unless err is not nil. A record that does not parse or
// belongs to another key gives an error wrapping dlock.ErrCorrupt: nothing
// may overwrite it.
func (b *Backend) lockRecord(ctx context.Context, key string, create bool, how int) (f lockedFile, cur fileRecord, empty bool, err error) {
	if err := ctx.Err(); err != nil {
		return f, cur, false, err
	}
	f, err = b.lockFile(ctx, keyID(key), create, how)
	if err != nil {
		return f, cur, false, err
	}
	hints := b.hints
	hints.key = key
	cur, empty, err = f.read(&hints)
	if err != nil {
		b.unlockFile(&f)
		return f, cur, false, err
	}
	return f, cur, empty, nil
}

// Acquire implements [dlock.Backend]. Errors wrap [dlock.ErrCorrupt] for an
// unreadable record, [dlock.ErrUnavailable] for file-system failures, or
// ctx's error.
//
// A waiting acquire that is refused joins the key's FIFO queue (Linux, see
// [WithFIFO]); a free key goes to the first in line, which every attempt
// respects.
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	w, waiting := b.waiterFor(ctx, req)
	f, cur, empty, holder, err := b.lockForAcquire(ctx, req.Key, !waiting)
	if err != nil {
		return dlock.Record{}, false, b.opError("acquire", req.Key, err)
	}
	if holder != nil {
		return b.public(holder, b.now()), false, nil
	}
	defer b.unlockFile(&f)
	now := b.now()
	var fence uint64
	if empty {
		// A new file. See raiseFloor for why the floor is enough.
		floor, err := b.readFloor(ctx)
		if err != nil {
			return dlock.Record{}, false, b.opError("acquire", req.Key, err)
		}
		fence = floor + 1
	} else {
		if b.live(&cur, now) {
			if waiting && w == nil {
				w = b.enlist(ctx, req)
			}
			return b.refuse(&f, &cur, w, b.public(&cur, now), false)
		}
		if d := b.mayTake(&f, &cur, w, now); !d.grant {
			if d.markFree {
				cur = cur.free(now.mono)
			}
			if waiting && w == nil {
				w = b.enlist(ctx, req)
			}
			return b.refuse(&f, &cur, w, promised(req.Key, cur.Fence, d.passAt), d.markFree)
		}
		fence = cur.Fence + 1
	}
	rec := fileRecord{
		Key:        req.Key,
		Fence:      fence,
		QueueNext:  cur.QueueNext,
		LockID:     req.LockID,
		TokenHash:  tokenHash(req.Token),
		AcquiredAt: now.wall,
		ExpiresAt:  now.wall.Add(req.TTL),
		Owner:      fileOwner{Host: req.Owner.Host, PID: req.Owner.PID, Label: req.Owner.Label},
	}
	if pid := rec.Owner.PID; pid > 0 {
		// What the dead-holder check will need: the pid's start time and
		// the namespace the pid means something in.
		rec.Owner.PIDNS = b.pidNS
		if pid == b.selfPID {
			rec.Owner.StartTicks = b.selfStart
		} else if t, zombie, err := procStart(pid); err == nil && !zombie {
			rec.Owner.StartTicks = t
		}
	}
	if now.mono != 0 {
		rec.BootID, rec.ExpiresMono = b.boot, now.mono+int64(req.TTL)
	}
	if err := f.write(&rec, b.opts.sync); err != nil {
		return dlock.Record{}, false, b.opError("acquire", req.Key, err)
	}
	b.leave(w) // granted: its place in line goes
	return b.public(&rec, now), true, nil
}

// refuse answers an attempt on the key of f that is held, or free but
// promised to the first in line: rec says by whom. A waiter not yet in the
// queue joins it. dirty means cur must be written in any case.
func (b *Backend) refuse(f *lockedFile, cur *fileRecord, w *waiter, rec dlock.Record, dirty bool) (dlock.Record, bool, error) {
	joined := b.join(w, f, cur)
	if joined || dirty {
		if err := f.write(cur, b.opts.sync); err != nil {
			if joined {
				w.unjoin()
			}
			return dlock.Record{}, false, b.opError("acquire", cur.Key, err)
		}
	}
	return b.refusal(rec, w, f), false, nil
}

// lockForAcquire takes key's file exclusively for an acquire. While another
// process holds the file's lock (under contention, usually a waiter like
// us), a one-shot attempt (peek) looks at the record without the lock
// instead of queueing: if a live lease is there, the answer is "held"
// (holder != nil) and nothing is written. Without this, a crowd of
// attempts convoys on the file's lock, each one preempted while holding
// it, and starves the refresh and release of the very holder they wait
// for. Only a lease that looks free, or a record being written at that
// instant, makes it queue. A waiting attempt always takes the lock: if
// refused, it joins the FIFO queue in the same step.
func (b *Backend) lockForAcquire(ctx context.Context, key string, peek bool) (f lockedFile, cur fileRecord, empty bool, holder *fileRecord, err error) {
	if !peek {
		f, cur, empty, err = b.lockRecord(ctx, key, true, unix.LOCK_EX)
		return f, cur, empty, nil, err
	}
	delay := 20 * time.Microsecond
	for {
		f, cur, empty, err = b.lockRecord(ctx, key, true, unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return f, cur, empty, nil, err
		}
		if rec, ok := b.peek(keyID(key), key); ok && b.live(&rec, b.now()) {
			return f, cur, false, &rec, nil
		}
		if err := ctx.Err(); err != nil {
			return f, cur, false, nil, err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Millisecond)
	}
}

// Refresh implements [dlock.Backend]. It returns an error wrapping
// [dlock.ErrNotHeld] if token does not hold a live lease on key.
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	return b.extend(ctx, "refresh", key, token, ttl, false)
}

// Keep implements [dlock.Keeper]: a refresh that also forgets the holder's
// pid, so that the dead-holder check no longer applies and the lease lasts
// its ttl after the holder's process has exited. The host and label stay
// for inspection. (Like a refresh, it wakes waiters if the lease now ends
// sooner.)
func (b *Backend) Keep(ctx context.Context, key, token string, ttl time.Duration) error {
	_, err := b.extend(ctx, "keep", key, token, ttl, true)
	return err
}

// extend sets the lease of key, if token holds it, to ttl from now, and with
// detach forgets its holder's process. If that ends the lease sooner, the
// key's waiters, who sleep until the expiry they were told of (or the next
// dead-holder poll), are woken to look again.
func (b *Backend) extend(ctx context.Context, op, key, token string, ttl time.Duration, detach bool) (dlock.Record, error) {
	f, cur, empty, err := b.lockRecord(ctx, key, false, unix.LOCK_EX)
	if errors.Is(err, fs.ErrNotExist) {
		err = dlock.ErrNotHeld
	}
	if err != nil {
		return dlock.Record{}, b.opError(op, key, err)
	}
	defer b.unlockFile(&f)
	now := b.now()
	hash := tokenHash(token)
	if empty || !cur.heldBy(&hash) || !b.live(&cur, now) {
		return dlock.Record{}, b.opError(op, key, dlock.ErrNotHeld)
	}
	shorter := now.wall.Add(ttl).Before(cur.ExpiresAt)
	if now.mono != 0 && cur.ExpiresMono != 0 {
		shorter = now.mono+int64(ttl) < cur.ExpiresMono
	}
	cur.ExpiresAt = now.wall.Add(ttl)
	if now.mono != 0 {
		// live() said the record is of this boot or has no monotonic
		// expiry.
		cur.BootID, cur.ExpiresMono = b.boot, now.mono+int64(ttl)
	}
	if detach {
		cur.Owner.PID, cur.Owner.StartTicks, cur.Owner.PIDNS = 0, 0, ""
	}
	if err := f.write(&cur, b.opts.sync); err != nil {
		return dlock.Record{}, b.opError(op, key, err)
	}
	if shorter {
		wakeWaiters(f.fd)
	}
	return b.public(&cur, now), nil
}

// Release implements [dlock.Backend]. It leaves a free record that keeps
// the fence, and returns an error wrapping [dlock.ErrNotHeld] if token does
// not hold a live lease on key.
func (b *Backend) Release(ctx context.Context, key, token string) error {
	b.leaveByToken(token)
	f, cur, empty, err := b.lockRecord(ctx, key, false, unix.LOCK_EX)
	if errors.Is(err, fs.ErrNotExist) {
		err = dlock.ErrNotHeld
	}
	if err != nil {
		return b.opError("release", key, err)
	}
	defer b.unlockFile(&f)
	hash := tokenHash(token)
	now := b.now()
	if empty || !cur.heldBy(&hash) || !b.live(&cur, now) {
		return b.opError("release", key, dlock.ErrNotHeld)
	}
	free := cur.free(now.mono)
	if err := f.write(&free, b.opts.sync); err != nil {
		return b.opError("release", key, err)
	}
	wakeWaiters(f.fd)
	return nil
}

// Break implements [dlock.Breaker]: it frees key whatever its token and
// returns the lease it broke, keeping the fence.
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	f, cur, empty, err := b.lockRecord(ctx, key, false, unix.LOCK_EX)
	if errors.Is(err, fs.ErrNotExist) {
		return dlock.Record{}, false, nil
	}
	if err != nil {
		return dlock.Record{}, false, b.opError("break", key, err)
	}
	defer b.unlockFile(&f)
	now := b.now()
	if empty || !b.live(&cur, now) {
		return dlock.Record{}, false, nil
	}
	free := cur.free(now.mono)
	if err := f.write(&free, b.opts.sync); err != nil {
		return dlock.Record{}, false, b.opError("break", key, err)
	}
	wakeWaiters(f.fd)
	return b.public(&cur, now), true, nil
}

// Inspect implements [dlock.Backend].
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	f, cur, empty, err := b.lockRecord(ctx, key, false, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return dlock.Record{}, false, nil
	}
	if err != nil {
		return dlock.Record{}, false, b.opError("inspect", key, err)
	}
	b.unlockFile(&f)
	if now := b.now(); !empty && b.live(&cur, now) {
		return b.public(&cur, now), true, nil
	}
	return dlock.Record{}, false, nil
}

// Waiting implements [dlock.QueueReporter]: the live tickets of key's FIFO
// queue (Linux; elsewhere there is no queue and it reports 0).
func (b *Backend) Waiting(ctx context.Context, key string) (int, error) {
	f, cur, empty, err := b.lockRecord(ctx, key, false, unix.LOCK_SH)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, b.opError("waiting", key, err)
	}
	defer b.unlockFile(&f)
	if empty {
		return 0, nil
	}
	return countTickets(f.fd, 0, cur.QueueNext), nil
}

// List implements [dlock.Lister]. It reads every record in the directory;
// records that cannot be parsed are left out (operations on their keys and
// Cleanup report them).
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	out := []dlock.Record{}
	err := b.each(ctx, func(cur *fileRecord, now instant) {
		if strings.HasPrefix(cur.Key, prefix) && b.live(cur, now) {
			out = append(out, b.public(cur, now))
		}
	})
	if err != nil {
		return nil, b.opError("list", "", err)
	}
	slices.SortFunc(out, func(x, y dlock.Record) int { return strings.Compare(x.Key, y.Key) })
	return out, nil
}

// Stats implements [dlock.StatsReporter]. Total counts leases, live or
// expired; free records (released keys that keep their fence) are not
// counted.
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	var s dlock.Stats
	err := b.each(ctx, func(cur *fileRecord, now instant) {
		if !cur.held() {
			return
		}
		s.Total++
		if b.live(cur, now) {
			s.Active++
		} else {
			s.Expired++
		}
	})
	if err != nil {
		return dlock.Stats{}, b.opError("stats", "", err)
	}
	return s, nil
}

// each calls fn with every readable record, each read under a shared lock.
func (b *Backend) each(ctx context.Context, fn func(cur *fileRecord, now instant)) error {
	ids, err := b.lockFiles()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := b.lockFile(ctx, id, false, unix.LOCK_SH)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		hints := b.hints
		cur, empty, err := f.read(&hints)
		b.unlockFile(&f)
		switch {
		case err == nil && !empty:
			fn(&cur, b.now())
		case err == nil, errors.Is(err, dlock.ErrCorrupt):
		default:
			return err
		}
	}
	return nil
}

// lockFiles lists the key files in the directory.
func (b *Backend) lockFiles() ([]fileID, error) {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		return nil, err
	}
	var ids []fileID
	for _, e := range entries {
		if id, ok := parseName(e.Name()); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Cleanup implements [dlock.Cleaner]. It deletes the files of expired
// leases (counted in the result) and of free records (not counted), after
// raising the fence floor so that fences keep growing. It never deletes a
// live lease: the decision and the deletion happen under the file's
// exclusive lock. Unreadable records are left alone and reported, after the
// others were processed, in an error wrapping [dlock.ErrCorrupt].
func (b *Backend) Cleanup(ctx context.Context) (int, error) {
	ids, err := b.lockFiles()
	if err != nil {
		return 0, b.opError("cleanup", "", err)
	}
	n := 0
	var corrupt []error
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return n, b.opError("cleanup", "", err)
		}
		removed, err := b.cleanFile(ctx, id)
		switch {
		case err == nil:
			if removed {
				n++
			}
		case errors.Is(err, fs.ErrNotExist):
			// Removed by another cleanup meanwhile.
		case errors.Is(err, dlock.ErrCorrupt):
			corrupt = append(corrupt, err)
		default:
			return n, b.opError("cleanup", "", err)
		}
	}
	if b.opts.sync && n > 0 {
		if err := syncDir(b.dir); err != nil {
			return n, b.opError("cleanup", "", err)
		}
	}
	if len(corrupt) > 0 {
		return n, fmt.Errorf("filelock: cleanup: %w", errors.Join(corrupt...))
	}
	return n, nil
}

// cleanFile deletes one key file unless it holds a live lease; removed
// reports an expired lease (not a free record or an empty file).
func (b *Backend) cleanFile(ctx context.Context, id fileID) (removed bool, err error) {
	f, err := b.lockFile(ctx, id, false, unix.LOCK_EX)
	if err != nil {
		return false, err
	}
	defer b.unlockFile(&f)
	hints := b.hints
	cur, empty, err := f.read(&hints)
	if err != nil || (!empty && (b.live(&cur, b.now()) || queued(&f, &cur))) {
		return false, err
	}
	// The order matters: floor first, then unlink, both while we hold the
	// file's lock. See raiseFloor.
	if !empty {
		if err := b.raiseFloor(ctx, cur.Fence); err != nil {
			return false, err
		}
	}
	if err := f.unlink(); err != nil {
		return false, err
	}
	return !empty && cur.held(), nil
}

// opError wraps err for operation op on key: sentinels and context errors
// as they are, file-system errors as [dlock.ErrUnavailable].
func (b *Backend) opError(op, key string, err error) error {
	what := "filelock: " + op
	if key != "" {
		what += " " + strconv.Quote(key)
	}
	switch {
	case errors.Is(err, dlock.ErrNotHeld), errors.Is(err, dlock.ErrCorrupt),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	default:
		return fmt.Errorf("%s: %w: %w", what, dlock.ErrUnavailable, err)
	}
}
