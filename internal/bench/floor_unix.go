//go:build unix && !aix

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// FileFloor measures, in a scratch file under dir, the system calls the
// file backend makes for one state change on a cached descriptor (flock,
// statx or fstat, pread, pwrite, unlock), twice per pair since a pair is an acquire
// and a release. The backend adds to this only its own work (record codec,
// token hash, the core): the gap to the serial figure is what dlock costs
// above the kernel. The scratch file is removed afterwards.
func FileFloor(ctx context.Context, dir string, d time.Duration) (Floor, error) {
	f, err := os.CreateTemp(dir, ".dlock-bench-floor-*")
	if err != nil {
		return Floor{}, fmt.Errorf("bench: file floor: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	record := []byte(`{"key":"dlock-bench/floor","fence":1,"lock_id":"0123456789abcdef","expires_at":"2006-01-02T15:04:05Z"}` + "\n")
	if _, err := f.Write(record); err != nil {
		return Floor{}, fmt.Errorf("bench: file floor: %w", err)
	}
	fd := int(f.Fd())
	buf := make([]byte, 4096)
	change := func() error {
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			return err
		}
		size, err := fileSize(fd)
		if err != nil {
			return err
		}
		if _, err := unix.Pread(fd, buf[:min(size, int64(len(buf)))], 0); err != nil {
			return err
		}
		if _, err := unix.Pwrite(fd, record, 0); err != nil {
			return err
		}
		return unix.Flock(fd, unix.LOCK_UN)
	}
	fl, err := MeasureFloor(ctx, "file", "2 x (flock, statx, pread, pwrite, unlock) on a cached descriptor in "+filepath.Clean(dir), d,
		func() error {
			if err := change(); err != nil {
				return err
			}
			return change()
		})
	if err != nil {
		return Floor{}, fmt.Errorf("bench: file floor: %w", err)
	}
	return fl, nil
}
