//go:build unix && !aix

package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

const (
	fileSuffix = ".lock"
	floorName  = ".fence-floor"
)

// fileID names a key's file: the SHA-256 of the key. The file is its hex
// form plus ".lock": a fixed length of [0-9a-f], safe whatever the key is
// (slashes, "../x", NUL-free Unicode, 1024 bytes). Two keys share a file
// only if SHA-256 collides; the key stored inside is checked on every read
// all the same.
type fileID [sha256.Size]byte

func keyID(key string) fileID { return sha256.Sum256([]byte(key)) }

func (id *fileID) name() string { return id.hex() + fileSuffix }

func (id *fileID) hex() string { return hex.EncodeToString(id[:]) }

// parseName returns the id of a key file name; ok is false for other files.
func parseName(name string) (id fileID, ok bool) {
	h, ok := strings.CutSuffix(name, fileSuffix)
	if !ok || len(h) != 2*len(id) || strings.ToLower(h) != h {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(h))
	return id, err == nil
}

// lockedFile is a key file whose flock we hold.
type lockedFile struct {
	id       fileID
	fd       int
	dir      string
	size     int64
	unlinked bool     // deleted by us: do not keep the fd
	failed   bool     // an I/O error: do not keep the fd
	last     *written // what this process last wrote through fd, if known
}

// written is a record this process wrote, as bytes and as read back. It
// travels with the cached descriptor: when the file still holds exactly
// these bytes, the next operation skips parsing them (a parse costs about
// as much as two system calls). Any other writer changes the bytes.
type written struct {
	raw []byte
	rec fileRecord
}

func (f *lockedFile) path() string { return f.dir + "/" + f.id.name() }

// lockFile is the first half of the protocol every operation follows: open
// the key's file (or reuse a cached descriptor), flock it (LOCK_EX or
// LOCK_SH) and make sure it is still linked. unlockFile is the second half.
// Without create a missing file gives an error matching fs.ErrNotExist.
//
// The link check closes the cleanup race: a cleaner deletes a file only
// while holding its exclusive lock. If we opened the file before that
// deletion, our flock succeeds once the cleaner is done, but on an inode
// that no longer has a name; acting on it would be acting on a lock nobody
// else can see. Seeing Nlink == 0 we start over, and the new open finds
// (or creates) the current file. Since only lock holders unlink, a linked
// file we hold the lock of stays the file its name refers to.
func (b *Backend) lockFile(ctx context.Context, id fileID, create bool, how int) (lockedFile, error) {
	f := lockedFile{id: id, dir: b.dir}
	for {
		f.fd, f.last = b.fds.get(id)
		if f.fd < 0 {
			flags := unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW
			if create {
				flags |= unix.O_CREAT
			}
			fd, err := openRetry(f.path(), flags|noatime)
			if err == unix.EPERM && noatime != 0 {
				fd, err = openRetry(f.path(), flags)
			}
			if err != nil {
				return f, &fs.PathError{Op: "open", Path: f.path(), Err: err}
			}
			f.fd = fd
			if create && b.opts.sync {
				// The name must be durable before a fence is written
				// into the file.
				if err := syncDir(b.dir); err != nil {
					unix.Close(fd)
					return f, err
				}
			}
		}
		if err := flock(ctx, f.fd, how); err != nil {
			if err == unix.EWOULDBLOCK {
				b.fds.put(id, f.fd, f.last) // a LOCK_NB try; the fd is fine
			} else {
				unix.Close(f.fd)
			}
			return f, pathError("flock", f.path(), err)
		}
		nlink, size, err := linksAndSize(f.fd)
		if err != nil {
			unix.Close(f.fd) // also drops the flock
			return f, &fs.PathError{Op: "fstat", Path: f.path(), Err: err}
		}
		if nlink == 0 {
			unix.Close(f.fd)
			continue
		}
		f.size = size
		return f, nil
	}
}

// unlockFile drops the flock and keeps the descriptor for the next call,
// or closes it.
func (b *Backend) unlockFile(f *lockedFile) {
	if f.unlinked || f.failed || unix.Flock(f.fd, unix.LOCK_UN) != nil {
		unix.Close(f.fd)
		return
	}
	b.fds.put(f.id, f.fd, f.last)
}

// pathError wraps a system call's error with the path, leaving context
// errors as they are.
func pathError(op, path string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &fs.PathError{Op: op, Path: path, Err: err}
}

// openRetry opens path, retrying on EINTR.
func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0o600)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// flock takes a flock on fd without blocking the thread, so that ctx can
// end the wait: LOCK_NB attempts with sleeps growing from 20µs to 1ms.
// Every holder keeps a file's lock for microseconds, so waits are short.
// With LOCK_NB in how it makes one attempt and may return EWOULDBLOCK.
func flock(ctx context.Context, fd, how int) error {
	delay := 20 * time.Microsecond
	for {
		err := unix.Flock(fd, how|unix.LOCK_NB)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EWOULDBLOCK:
			if how&unix.LOCK_NB != 0 {
				return err
			}
		default:
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Millisecond)
	}
}

// maxRecord bounds what a key file may hold, so a stray huge file is
// reported rather than read into memory.
const maxRecord = 1 << 20

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// read parses the record; empty reports a file with no content (new, or
// left by a process that died right after creating it). hints lets the
// parser reuse strings it would otherwise copy.
func (f *lockedFile) read(hints *parseHints) (rec fileRecord, empty bool, err error) {
	if f.size == 0 {
		return fileRecord{}, true, nil
	}
	if f.size > maxRecord {
		return fileRecord{}, false, fmt.Errorf("%w: %s has %d bytes", dlock.ErrCorrupt, f.path(), f.size)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := slices.Grow((*bp)[:0], int(f.size))[:f.size]
	*bp = buf
	n, err := preadFull(f.fd, buf)
	if err != nil {
		f.failed = true
		return fileRecord{}, false, &fs.PathError{Op: "read", Path: f.path(), Err: err}
	}
	if f.last != nil && string(f.last.raw) == string(buf[:n]) {
		return f.last.rec, false, nil
	}
	line := buf[:n]
	if i := slices.Index(line, '\n'); i >= 0 {
		line = line[:i]
	}
	rec, err = parseRecord(line, hints)
	if err != nil {
		return fileRecord{}, false, fmt.Errorf("%w: %s: %v", dlock.ErrCorrupt, f.path(), err)
	}
	// The caller's key (when it gave one) names this file: no need to hash.
	if (hints == nil || rec.Key != hints.key) && keyID(rec.Key) != f.id {
		return fileRecord{}, false, fmt.Errorf("%w: %s holds key %q, which belongs in another file", dlock.ErrCorrupt, f.path(), rec.Key)
	}
	return rec, false, nil
}

// peek reads key's record without taking the file's lock, for a quick
// look while another process holds it. A concurrent write may tear what a
// lockless read sees, so the file is read twice and the look counts only
// if both reads agree and parse; ok is false otherwise. The result is a
// hint, never a basis for writing.
func (b *Backend) peek(id fileID, key string) (rec fileRecord, ok bool) {
	path := b.dir + "/" + id.name()
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|noatime)
	if err == unix.EPERM && noatime != 0 {
		fd, err = openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	}
	if err != nil {
		return rec, false
	}
	defer unix.Close(fd)
	var first, second [2048]byte
	n1, err1 := unix.Pread(fd, first[:], 0)
	n2, err2 := unix.Pread(fd, second[:], 0)
	if err1 != nil || err2 != nil || n1 != n2 || n1 == 0 || string(first[:n1]) != string(second[:n2]) {
		return rec, false
	}
	line := first[:n1]
	i := slices.Index(line, '\n')
	if i < 0 {
		return rec, false // longer than the buffer, or torn
	}
	hints := b.hints
	hints.key = key
	rec, err = parseRecord(line[:i], &hints)
	return rec, err == nil && rec.Key == key
}

// maxPad is the most padding write adds; records are a few KiB at most.
const maxPad = 16 << 10

var spaces = strings.Repeat(" ", maxPad)

// write replaces the record in place with one pwrite: the new line, padded
// with spaces to the old length when it is shorter. Readers stop at the
// newline and trailing spaces are still valid JSON; a truncate instead
// would cost more than all the other system calls of an operation together
// on ext4, since the next acquire extends the file again. Only an unusually
// long old content is truncated.
func (f *lockedFile) write(rec *fileRecord, sync bool) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := appendRecord((*bp)[:0], rec)
	truncate := false
	if pad := int(f.size) - len(buf) - 1; pad > 0 {
		if pad <= maxPad {
			buf = append(buf, spaces[:pad]...)
		} else {
			truncate = true
		}
	}
	buf = append(buf, '\n')
	*bp = buf
	prev := f.last
	f.last = nil // until the write is known to have happened
	if err := pwriteFull(f.fd, buf); err != nil {
		f.failed = true
		return &fs.PathError{Op: "write", Path: f.path(), Err: err}
	}
	if truncate {
		if err := unix.Ftruncate(f.fd, int64(len(buf))); err != nil {
			f.failed = true
			return &fs.PathError{Op: "truncate", Path: f.path(), Err: err}
		}
		f.size = int64(len(buf))
	}
	f.size = max(f.size, int64(len(buf)))
	if sync {
		if err := unix.Fsync(f.fd); err != nil {
			f.failed = true
			return &fs.PathError{Op: "fsync", Path: f.path(), Err: err}
		}
	}
	// The file now holds exactly buf (padded or truncated to its length).
	if prev == nil {
		prev = new(written)
	}
	prev.raw = append(prev.raw[:0], buf...)
	prev.rec = rec.readBack()
	f.last = prev
	return nil
}

// unlink deletes the file; the caller must hold its exclusive lock.
func (f *lockedFile) unlink() error {
	if err := unix.Unlink(f.path()); err != nil {
		return &fs.PathError{Op: "unlink", Path: f.path(), Err: err}
	}
	f.unlinked = true
	return nil
}

func preadFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func pwriteFull(fd int, buf []byte) error {
	n := 0
	for n < len(buf) {
		m, err := unix.Pwrite(fd, buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		n += m
	}
	return nil
}

func syncDir(dir string) error {
	fd, err := openRetry(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return &fs.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// fdCache keeps idle descriptors of key files between calls, saving the
// open and close (path lookup, file table) of each operation.
//
// A cached descriptor is used by one call at a time: get takes it out of
// the cache. Sharing it would be wrong, not just racy: flock locks belong to
// the open file description, so a second flock through the same
// description succeeds at once and would let two goroutines in. A file that
// a cleanup deleted while its descriptor sat here is noticed by lockFile's
// Nlink check, like any other deletion.
type fdCache struct {
	mu     sync.Mutex
	idle   map[fileID]idleFD
	closed bool
}

type idleFD struct {
	fd   int
	last *written
}

// maxIdleFDs bounds the cache; beyond it descriptors are closed after use.
const maxIdleFDs = 64

// get returns a cached descriptor for id and what was last written
// through it, or -1.
func (c *fdCache) get(id fileID) (int, *written) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.idle[id]
	if !ok {
		return -1, nil
	}
	delete(c.idle, id)
	return e.fd, e.last
}

// put caches fd, whose flock the caller has dropped, with what was last
// written through it, or closes it.
func (c *fdCache) put(id fileID, fd int, last *written) {
	c.mu.Lock()
	if _, dup := c.idle[id]; dup || c.closed {
		c.mu.Unlock()
		unix.Close(fd)
		return
	}
	if c.idle == nil {
		c.idle = make(map[fileID]idleFD)
	}
	evict := -1
	if len(c.idle) >= maxIdleFDs {
		for old, e := range c.idle { // an arbitrary victim
			delete(c.idle, old)
			evict = e.fd
			break
		}
	}
	c.idle[id] = idleFD{fd, last}
	c.mu.Unlock()
	if evict >= 0 {
		unix.Close(evict)
	}
}

func (c *fdCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.idle {
		unix.Close(e.fd)
		delete(c.idle, id)
	}
	c.closed = true
}

// checkPrivateDir accepts d only if it is a real directory (not a symlink)
// owned by this user, and makes it 0700.
func checkPrivateDir(d string) error {
	var st unix.Stat_t
	if err := unix.Lstat(d, &st); err != nil {
		return fmt.Errorf("filelock: default directory %s: %w: %w", d, dlock.ErrUnavailable, &fs.PathError{Op: "lstat", Path: d, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("filelock: default directory %s is not a directory: %w", d, dlock.ErrUnavailable)
	}
	if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("filelock: default directory %s is owned by uid %d, not by this user (uid %d); set DLOCK_DIR: %w", d, st.Uid, os.Getuid(), dlock.ErrUnavailable)
	}
	if st.Mode&0o077 != 0 {
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("filelock: default directory %s: %w: %w", d, dlock.ErrUnavailable, err)
		}
	}
	return nil
}
