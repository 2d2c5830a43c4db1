package filelock

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAheadFindsTheTicketJustAhead checks the queue's range queries against
// a brute-force answer, for tickets held on descriptors of their own (as
// waiters in other processes hold them) with gaps of every size.
func TestAheadFindsTheTicketJustAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	if err := os.WriteFile(path, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	live := []uint64{0, 3, 4, 10, 1000, 1 << 20, 1<<40 + 7}
	for _, tk := range live {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		lk := unix.Flock_t{Type: unix.F_RDLCK, Start: int64(ticketBase + tk), Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
	}
	q, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(q)
	probes := []uint64{0, 1, 3, 4, 5, 10, 11, 999, 1000, 1001, 1 << 20, 1<<20 + 1, 1 << 30, 1<<40 + 7, 1<<40 + 8, maxTicket}
	for _, tk := range probes {
		want, wantOK := uint64(0), false
		for _, l := range live {
			if l < tk {
				want, wantOK = l, true
			}
		}
		if got, ok := ahead(q, tk); got != want || ok != wantOK {
			t.Errorf("ahead(%d) = %d, %v; want %d, %v", tk, got, ok, want, wantOK)
		}
		i, _ := slices.BinarySearch(live, tk) // live tickets before tk
		wantPlace := min(i+1, 3)
		if got := place(q, tk); got != wantPlace {
			t.Errorf("place(%d) = %d, want %d", tk, got, wantPlace)
		}
	}
	if !anyTicket(q, 0, maxTicket) || anyTicket(q, 5, 10) || !anyTicket(q, 5, 11) {
		t.Error("anyTicket disagrees with the tickets taken")
	}
}
