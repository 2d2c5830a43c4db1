package filelock

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
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

// TestWaiterBehindUnreachableTickets: tickets without a life line (their
// waiters in another network namespace, or squatted) are watched by
// polling. Two such tickets are ahead of a real waiter, which, third in
// line, watches neither the key nor any life line; once they go, it must
// notice by itself and take the key when it is released.
func TestWaiterBehindUnreachableTickets(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := "behind-unreachable"
	holder, err := dlock.New(b, dlock.WithTTL(time.Hour)).TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	path := dir + "/" + func() string { id := keyID(key); return id.name() }()
	var foreign []int
	for tk := range uint64(2) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: unix.F_RDLCK, Start: int64(ticketBase + tk), Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		foreign = append(foreign, fd)
	}
	// The holder's record, with the two tickets counted.
	f, cur, _, err := b.lockRecord(ctx, key, false, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	cur.QueueNext = 2
	if err := f.write(&cur, false); err != nil {
		t.Fatal(err)
	}
	b.unlockFile(&f)

	other, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := dlock.New(other, dlock.WithTTL(time.Hour)).Acquire(ctx, key, dlock.WithMaxWait(30*time.Second))
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	deadline := time.Now().Add(30 * time.Second) // bounds a broken run
	for {
		f, cur, _, err := b.lockRecord(ctx, key, false, unix.LOCK_SH)
		if err != nil {
			t.Fatal(err)
		}
		b.unlockFile(&f)
		if cur.QueueNext == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiter never queued")
		}
		time.Sleep(time.Millisecond)
	}
	for _, fd := range foreign {
		unix.Close(fd)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter behind tickets without life lines: %v", err)
	}
}

// TestLocalTicketNeedsNoLifeLine: a follower whose ticket ahead belongs to
// this process watches it through the ticket's gone channel, not its life
// line: with the life line cut the watch still holds (a socket watch would
// find it unreachable and poll), and it ends when the ticket is dropped.
func TestLocalTicketNeedsNoLifeLine(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	b, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := "local"
	f, cur, _, err := b.lockRecord(ctx, key, true, unix.LOCK_EX)
	if err != nil {
		t.Fatal(err)
	}
	w := &waiter{key: key, id: "w", lockFD: -1, lifeFD: -1}
	joined := b.join(w, &f, &cur)
	if err := f.write(&cur, false); err != nil {
		t.Fatal(err)
	}
	b.unlockFile(&f)
	if !joined {
		t.Fatal("join failed")
	}
	id := ticketID{w.file, w.ticket}
	if localTicket(id) == nil {
		t.Fatal("a joined ticket is not registered as this process's")
	}
	w.mu.Lock()
	unix.Close(w.lifeFD)
	w.lifeFD = -1
	w.mu.Unlock()

	name := keyID(key)
	q, err := unix.Open(dir+"/"+name.name(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(q)
	lines := newLifeLines(w.file)
	defer lines.close()
	if got := lines.watch(q, []uint64{w.ticket}); got != lineWatched {
		t.Fatalf("watch of a ticket of this process without its life line = %d, want lineWatched", got)
	}
	w.mu.Lock()
	w.dropTicket()
	w.mu.Unlock()
	select {
	case got := <-lines.ended:
		if got != id.t {
			t.Errorf("watch ended for ticket %d, want %d", got, id.t)
		}
	case <-time.After(30 * time.Second): // bounds a broken run
		t.Fatal("the watch did not end when the ticket was dropped")
	}
	if anyTicket(q, id.t, id.t+1) {
		t.Error("the dropped ticket is still live: its follower would wake to find it there")
	}
	if localTicket(id) != nil {
		t.Error("the dropped ticket is still registered")
	}
}
