//go:build unix && !aix

package filelock

import (
	"context"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

// The fence floor (the file .fence-floor) is a number no deleted key file's
// fence exceeded. A key file starts at floor+1, so fences keep growing when
// cleanup deletes files.

// readFloor returns the fence floor.
func (b *Backend) readFloor(ctx context.Context) (uint64, error) {
	fd, cur, err := b.lockFloor(ctx, unix.LOCK_SH)
	if err != nil {
		return 0, err
	}
	unix.Close(fd)
	return cur, nil
}

// raiseFloor makes the fence floor at least fence. Cleanup calls it while
// holding the exclusive lock of the file it is about to delete, before the
// unlink. That order is what keeps fences growing across deletion:
//
//   - A process that finds a key file empty (new) starts the key at
//     floor+1, reading the floor after it opened the file.
//   - If its open created the file, the old file's name was already gone,
//     so the unlink happened before the open, and the floor was raised
//     before the unlink: the read sees a floor >= every fence the old file
//     ever had.
//   - If instead its open found the old file, the process waits for the
//     flock, then sees Nlink == 0 and starts over (see lockFile).
//
// The floor is shared by all keys, so a recreated key may jump ahead;
// fences only promise to grow.
func (b *Backend) raiseFloor(ctx context.Context, fence uint64) error {
	fd, cur, err := b.lockFloor(ctx, unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if fence <= cur {
		return nil
	}
	// The number only grows, so the new text is never shorter than the
	// old one and overwrites it entirely.
	buf := strconv.AppendUint(nil, fence, 10)
	buf = append(buf, '\n')
	if err := pwriteFull(fd, buf); err != nil {
		return &fs.PathError{Op: "write", Path: b.floor, Err: err}
	}
	if b.opts.sync {
		if err := unix.Fsync(fd); err != nil {
			return &fs.PathError{Op: "fsync", Path: b.floor, Err: err}
		}
	}
	return nil
}

// lockFloor opens and locks the floor file and reads its value. Closing fd
// unlocks it.
func (b *Backend) lockFloor(ctx context.Context, how int) (fd int, cur uint64, err error) {
	// O_CREAT: if someone deleted the file, fences may already have gone
	// backwards; recreating it at least keeps later cleanups sound.
	fd, err = openRetry(b.floor, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return -1, 0, &fs.PathError{Op: "open", Path: b.floor, Err: err}
	}
	if err := flock(ctx, fd, how); err != nil {
		unix.Close(fd)
		return -1, 0, pathError("flock", b.floor, err)
	}
	var buf [32]byte
	n, err := preadFull(fd, buf[:])
	if err != nil {
		unix.Close(fd)
		return -1, 0, &fs.PathError{Op: "read", Path: b.floor, Err: err}
	}
	if s := strings.TrimSpace(string(buf[:n])); s != "" {
		cur, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("%w: %s: %q is not a number", dlock.ErrCorrupt, b.floor, s)
		}
	}
	return fd, cur, nil
}
