package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// TestHolderLine: a refusal names the lease, or, for a key that is free but
// promised to the first in a FIFO queue (no lease, no lock id), says so.
func TestHolderLine(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	lease := dlock.Record{LockID: "0123456789abcdef", Owner: dlock.Owner{Host: "web1", PID: 42}, AcquiredAt: now.Add(-time.Second), ExpiresAt: now.Add(time.Minute)}
	if got := holderLine(lease, now); !strings.HasPrefix(got, "lock 0123456789abcdef (host web1, pid 42) since "+clock(lease.AcquiredAt, now)) || !strings.Contains(got, "until "+clock(lease.ExpiresAt, now)) {
		t.Errorf("lease: %q", got)
	}
	promised := dlock.Record{Owner: dlock.Owner{Label: "next in the FIFO queue"}, ExpiresAt: now.Add(1500 * time.Millisecond)}
	if got := holderLine(promised, now); !strings.HasPrefix(got, "the waiter first in its queue (its turn), until "+clock(promised.ExpiresAt, now)) {
		t.Errorf("promised: %q", got)
	}
}
