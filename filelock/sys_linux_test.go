package filelock

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

func TestProcStart(t *testing.T) {
	ticks, zombie, err := procStart(os.Getpid())
	if err != nil || ticks == 0 || zombie {
		t.Fatalf("procStart(self) = %d, %v, %v", ticks, zombie, err)
	}
	again, _, _ := procStart(os.Getpid())
	if again != ticks {
		t.Errorf("start time changed: %d then %d", ticks, again)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	if _, _, err := procStart(cmd.Process.Pid); err != errNoProcess {
		// The pid may have been reused already; then it is another
		// process, whose start time differs from ours.
		t.Logf("pid %d reused: %v", cmd.Process.Pid, err)
	}
	if _, _, err := procStart(1 << 30); err != errNoProcess {
		t.Errorf("procStart(huge pid) = %v, want errNoProcess", err)
	}
}

// TestMonoClock checks that monoNanos, computed from Go's clock, is
// CLOCK_MONOTONIC: the value other processes read from the kernel. Each
// reading lies between two system-call readings taken around it; the only
// slack is the error of the one-time pairing (half a clock_gettime call).
func TestMonoClock(t *testing.T) {
	if bootID() == "" || monoNanos() == 0 || pidNamespace() == "" {
		t.Skip("no boot id, CLOCK_MONOTONIC or pid namespace here")
	}
	const slack = int64(time.Millisecond)
	kernel := func() int64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		return ts.Nano()
	}
	for range 1000 {
		before := kernel()
		m := monoNanos()
		after := kernel()
		if m < before-slack || m > after+slack {
			t.Fatalf("monoNanos = %d, outside the kernel's [%d, %d] by more than %dns", m, before, after, slack)
		}
	}
}

// TestExpiryIgnoresWallClock writes leases whose wall-clock expiry says the
// opposite of their monotonic expiry: the monotonic clock decides, and a
// record from another boot is expired.
func TestExpiryIgnoresWallClock(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b.boot == "" {
		t.Skip("no boot id")
	}
	now := b.now()
	past, future := now.wall.Add(-time.Hour), now.wall.Add(time.Hour)
	cases := []struct {
		name string
		rec  fileRecord
		live bool
	}{
		{"wall past, monotonic future", fileRecord{ExpiresAt: past, BootID: b.boot, ExpiresMono: now.mono + int64(time.Hour)}, true},
		{"wall future, monotonic past", fileRecord{ExpiresAt: future, BootID: b.boot, ExpiresMono: now.mono - 1}, false},
		{"other boot", fileRecord{ExpiresAt: future, BootID: "another-boot", ExpiresMono: now.mono + int64(time.Hour)}, false},
		{"no monotonic expiry", fileRecord{ExpiresAt: future}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := t.Name()
			tc.rec.Key, tc.rec.Fence, tc.rec.LockID = key, 5, "holder"
			writeRecord(t, b, &tc.rec)
			_, found, err := b.Inspect(t.Context(), key)
			if err != nil || found != tc.live {
				t.Fatalf("Inspect = found %v, %v; want %v", found, err, tc.live)
			}
			rec, granted, err := b.Acquire(context.Background(), dlock.AcquireRequest{Key: key, Token: "t", LockID: "new", TTL: time.Minute})
			if err != nil || granted == tc.live {
				t.Fatalf("Acquire = granted %v, %v; want %v", granted, err, !tc.live)
			}
			if granted && rec.Fence != 6 {
				t.Errorf("fence %d, want 6", rec.Fence)
			}
		})
	}
}

func writeRecord(t *testing.T, b *Backend, r *fileRecord) {
	t.Helper()
	id := keyID(r.Key)
	line := append(appendRecord(nil, r), '\n')
	if err := os.WriteFile(b.dir+"/"+id.name(), line, 0o600); err != nil {
		t.Fatal(err)
	}
}
