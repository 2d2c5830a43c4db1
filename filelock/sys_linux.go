package filelock

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// On Linux, expiry is decided on CLOCK_MONOTONIC: it is system-wide (the
// same for every process on the host) and monotonic (settimeofday, NTP steps
// and daylight saving do not move it). It is also the clock the core measures
// a holder's validity on (Go's monotonic clock), so the store and the holder
// agree even across a suspend, during which neither advances; CLOCK_BOOTTIME
// would let a lease expire in the store while its holder, waking up, still
// counted it valid. Its values mean nothing after a reboot; records
// therefore carry the boot id, and a record from another boot is expired.

// linksAndSize returns the link count and size of the open file fd. It
// asks statx for those two only: a stat that includes the times marks them
// as seen, after which (Linux 6.13 and later, multigrain timestamps) every
// write must store a fresh fine-grained mtime, which dirties the inode and
// costs ext4 a journal update per write.
// Kernels before 4.11, and some seccomp filters, lack statx: fstat then.
func linksAndSize(fd int) (nlink uint64, size int64, err error) {
	if !noStatx.Load() {
		var stx unix.Statx_t
		err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_NLINK|unix.STATX_SIZE, &stx)
		if err == nil {
			return uint64(stx.Nlink), int64(stx.Size), nil
		}
		if err != unix.ENOSYS && err != unix.EPERM {
			return 0, 0, err
		}
		noStatx.Store(true)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, 0, err
	}
	return uint64(st.Nlink), st.Size, nil
}

var noStatx atomic.Bool

// bootID returns this boot's id, or "" if it cannot be read (then expiry
// falls back to the wall clock).
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// waitMark is the byte of a key file that waiters read-lock while they
// wait for the key (see watcher.mark): an open-file-description lock
// (F_OFD_SETLK), which is independent of the flock the protocol uses, on a
// byte far past any record. Such locks go away with the descriptor, so a
// waiter that dies leaves no mark behind.
const waitMark = 1 << 62

// wakeWaiters sets the file's times to now, which inotify reports as
// IN_ATTRIB: the event waiters listen for (see notify_linux.go). Grants
// and refreshes only write, so they wake nobody. It is utimensat(fd, NULL,
// NULL, 0), futimens(3) in C; x/sys has no wrapper that takes a NULL path.
// Touching the times dirties the inode (on ext4 a journal update, ~2µs,
// about a tenth of an uncontended acquire+release pair), so it is skipped
// when no waiter, in any process, holds the file's wait mark: asking
// costs one fcntl that looks at the inode's lock list.
// Best effort: a lost wake-up costs a waiter latency (it still wakes at the
// holder's expiry and on the poll), never safety.
func wakeWaiters(fd int) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: waitMark, Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err == nil && lk.Type == unix.F_UNLCK {
		return // nobody waits for this key
	}
	_, _, _ = unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, 0, 0, 0, 0)
}

// monoNanos returns CLOCK_MONOTONIC in nanoseconds, 0 if unavailable.
// Go's monotonic clock is CLOCK_MONOTONIC less a constant, read through the
// vDSO; clock_gettime through x/sys is a real system call, two per
// acquire+release pair. So the constant is found once and every later
// reading comes from time.Since.
func monoNanos() int64 {
	monoOnce.Do(func() { monoBase, monoStart = monoOffset() })
	if monoBase == 0 {
		return 0
	}
	return monoBase + int64(time.Since(monoStart))
}

var (
	monoOnce  sync.Once
	monoBase  int64     // CLOCK_MONOTONIC at monoStart
	monoStart time.Time // carries Go's monotonic reading
)

// monoOffset pairs a CLOCK_MONOTONIC reading with a Go time taken at the
// same moment, to within half the narrowest of a few tries (a preemption
// between the reads only widens one try).
func monoOffset() (int64, time.Time) {
	var (
		best  = time.Duration(1<<63 - 1)
		base  int64
		start time.Time
	)
	for range 5 {
		var ts unix.Timespec
		before := time.Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return 0, time.Time{}
		}
		after := time.Now()
		if d := after.Sub(before); d < best {
			best, base, start = d, ts.Nano(), before.Add(d/2)
		}
	}
	return base, start
}

// pidNamespace identifies the PID namespace pids of this process live in,
// "" if unknown. A pid recorded in another namespace (another container on
// the same kernel and host name) says nothing about /proc here.
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}

// errNoProcess reports that no process with the pid exists.
var errNoProcess = errors.New("no such process")

// procStart returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat) and whether it is a zombie, one that has
// exited and only waits to be reaped. errNoProcess means there is no such
// process; other errors mean the answer is unknown.
func procStart(pid int) (ticks uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return 0, false, errNoProcess
	}
	if err != nil {
		return 0, false, err
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses itself: the fields resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false, errors.New("unexpected /proc stat format")
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64) // f[0] is field 3 (state)
	if err != nil {
		return 0, false, errors.New("unexpected /proc stat format")
	}
	return ticks, f[0] == "Z" || f[0] == "X", nil
}

// noatime is added to the flags of key-file opens. Every operation reads
// the file after the previous one wrote it, so with relatime each read
// would update the access time and dirty the inode: a measurable part of
// an operation. O_NOATIME needs the caller to own the file (or
// CAP_FOWNER); the open is retried without it on EPERM.
const noatime = unix.O_NOATIME
