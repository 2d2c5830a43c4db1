//go:build unix && !aix

package filelock_test

import (
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
)

// The figures these report are acquire+release pairs per second, the
// issue's measure (target: 50,000 serial pairs/s through dlock.Client).

func newBenchClient(b *testing.B) *dlock.Client {
	b.Helper()
	be, err := filelock.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return dlock.New(be, dlock.WithTTL(time.Minute))
}

// BenchmarkAcquireRelease measures serial TryAcquire + Release of one key
// through dlock.Client: the whole path a program pays.
func BenchmarkAcquireRelease(b *testing.B) {
	c := newBenchClient(b)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.TryAcquire(ctx, "bench/serial")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkAcquireReleaseParallel runs pairs from GOMAXPROCS goroutines,
// each on its own key.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	c := newBenchClient(b)
	ctx := b.Context()
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		key := "bench/parallel/" + strconv.FormatInt(next.Add(1), 10)
		for pb.Next() {
			l, err := c.TryAcquire(ctx, key)
			if err != nil {
				b.Error(err)
				return
			}
			if err := l.Release(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkRawFloor measures only the system calls of one state change
// when the file is opened for it (open, flock, statx or fstat, pread,
// pwrite, close): the floor under any design with a file per key and no
// descriptor cache. pairs/s is half the state changes per second, since a
// pair is two of them.
func BenchmarkRawFloor(b *testing.B) { rawFloor(b, true) }

// BenchmarkRawFloorCachedFD measures the system calls the backend's hot
// path makes on a cached descriptor (flock, statx or fstat, pread, pwrite,
// unlock):
// the floor under this design. The gap to BenchmarkAcquireRelease is what
// the core and the record codec cost.
func BenchmarkRawFloorCachedFD(b *testing.B) { rawFloor(b, false) }

func rawFloor(b *testing.B, reopen bool) {
	path := filepath.Join(b.TempDir(), "raw.lock")
	record := []byte(`{"key":"bench","fence":1,"lock_id":"0123456789abcdef"}` + "\n")
	if err := os.WriteFile(path, record, 0o600); err != nil {
		b.Fatal(err)
	}
	open := func() int {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|filelock.NoAtime, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		return fd
	}
	fd := open()
	buf := make([]byte, 4096)
	for b.Loop() {
		if reopen {
			fd = open()
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			b.Fatal(err)
		}
		_, size, err := filelock.LinksAndSize(fd) // statx on Linux, as the backend
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Pread(fd, buf[:size], 0); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Pwrite(fd, record, 0); err != nil {
			b.Fatal(err)
		}
		if reopen {
			unix.Close(fd) // drops the flock
		} else if err := unix.Flock(fd, unix.LOCK_UN); err != nil {
			b.Fatal(err)
		}
	}
	unix.Close(fd)
	b.ReportMetric(float64(b.N)/2/b.Elapsed().Seconds(), "pairs/s")
}

// BenchmarkAcquireReleaseSync is BenchmarkAcquireRelease with WithSync:
// the price of records that survive a power loss.
func BenchmarkAcquireReleaseSync(b *testing.B) {
	be, err := filelock.New(b.TempDir(), filelock.WithSync(true))
	if err != nil {
		b.Fatal(err)
	}
	c := dlock.New(be, dlock.WithTTL(time.Minute))
	ctx := b.Context()
	for b.Loop() {
		l, err := c.TryAcquire(ctx, "bench/sync")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}
