//go:build unix

package fence

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockEx = unix.LOCK_EX
	lockSh = unix.LOCK_SH
)

// lock opens the file and flocks it, polling so that ctx can end the wait.
func (r *Resource) lock(ctx context.Context, how int) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(r.path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	delay := 20 * time.Microsecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, fmt.Errorf("fence: %w", &fs.PathError{Op: "flock", Path: r.path, Err: err})
		}
		if err := ctx.Err(); err != nil {
			f.Close()
			return nil, err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Millisecond)
	}
}
