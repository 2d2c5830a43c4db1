//go:build unix && !linux

package filelock

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Outside Linux there is no portable system-wide monotonic clock or process
// start time: expiry uses the wall clock and a dead holder is only freed at
// its TTL.

func bootID() string { return "" }

// linksAndSize returns the link count and size of the open file fd.
func linksAndSize(fd int) (nlink uint64, size int64, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	return uint64(st.Nlink), st.Size, nil
}
func monoNanos() int64     { return 0 }
func pidNamespace() string { return "" }

var errNoProcess = errors.New("no such process")

func procStart(int) (uint64, bool, error) { return 0, false, errors.ErrUnsupported }

const noatime = 0

// wakeWaiters does nothing: outside Linux nobody listens.
func wakeWaiters(int) {}

// watcher is empty outside Linux: there the Backend is not a
// dlock.Notifier, and the core polls.
type watcher struct{}

func (w *watcher) stopIdle() {}
