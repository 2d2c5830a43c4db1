package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlock-dev/dlock"
)

// The FIFO queue (Linux, [WithFIFO]). A waiting acquire that finds the key
// held joins the key's queue, in the same step as its refusal (under the
// key file's exclusive flock): it takes the number QueueNext of the record
// (its ticket) and read-locks byte ticketBase+ticket of the key file with
// an open-file-description lock on a descriptor of its own. The lock is its
// place in line: the kernel drops it when the waiter leaves or its process
// dies, so a crashed waiter holds up nobody. A free key goes only to the
// first live ticket; a TryAcquire, or a waiter's first attempt, respects
// the queue without passing it. One F_OFD_GETLK over a range of bytes tells
// whether any ticket in it is live.
//
// Each waiter also listens on a Unix socket while it waits, its life line,
// named in the abstract namespace after the key file and the ticket. The
// waiter behind it connects (and is never accepted) and reads: the read
// ends when the listener closes, because the waiter ahead left (granted,
// gave up) or died. So a hand-over wakes the one waiter whose turn it is,
// not every process that waits, without polling, without the per-user
// limit on inotify instances, and without creating files (on ext4 a file
// created where many were deleted costs half a millisecond). Abstract
// sockets belong to a network namespace: a waiter that cannot reach the
// life line ahead of it (another namespace, or a listener of another user
// squatting the name) looks every deadHolderPoll instead. A waiter whose
// ticket ahead is one of its own process's (see local) waits on that
// ticket's channel instead of dialling: no socket per in-process
// hand-over.
// Only the first two in line watch the key file itself (see watcher): the
// first to take the key, the second to pass a first in line that does not
// take a free key within queueGrace (a stopped process: SIGSTOP, a frozen
// container), as a newcomer may too.

const (
	// ticketBase is the byte of the key file that ticket 0 locks; tickets
	// lie past the wait mark and far past any record.
	ticketBase = waitMark + 1
	// maxTicket bounds ticket numbers so that every ticket's byte is a
	// valid file offset.
	maxTicket = 1<<63 - 1 - ticketBase
	// queueGrace is how long a key may stay free, promised to the first in
	// line, before the others may pass it.
	queueGrace = 2 * time.Second
	// farLook is when a waiter behind the first two looks on its own if
	// nothing woke it: a safety net, since its turn comes by its life line.
	farLook = time.Minute
)

// queue is the waiting acquires of one Backend, by lock id.
type queue struct {
	mu      sync.Mutex
	waiters map[string]*waiter
	closed  bool
}

// waiter is one waiting acquire of this Backend. Its ticket is taken by an
// Acquire (under the key file's flock) and dropped by leave, which may run
// at any time (its context ended), hence mu.
type waiter struct {
	key  string
	id   string
	stop func() bool // stops leave at the end of the wait's context

	mu     sync.Mutex
	tried  bool   // an attempt tried to join (at most one does)
	joined bool   // it holds a ticket
	left   bool   // leave ran: no ticket again
	ticket uint64 // its number, if joined
	file   fileIdentity
	lockFD int           // holds the ticket's lock
	lifeFD int           // its life line, a listening socket; -1 without one
	gone   chan struct{} // closed when the ticket is dropped (see local)
}

// fileIdentity names a key file's inode, which the queue belongs to.
type fileIdentity struct{ dev, ino uint64 }

func identify(fd int) (fileIdentity, bool) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return fileIdentity{}, false
	}
	return fileIdentity{uint64(st.Dev), st.Ino}, true
}

// local is this process's live tickets. A follower whose ticket ahead is
// one of them waits for that ticket's gone channel instead of dialling its
// life line: the same wake-up, without a socket per hand-over, when the
// waiters of one key are goroutines of one program.
var local = struct {
	sync.Mutex
	tickets map[ticketID]chan struct{}
}{tickets: make(map[ticketID]chan struct{})}

// ticketID names a ticket: its number in the queue of a key file's inode.
type ticketID struct {
	file fileIdentity
	t    uint64
}

// localTicket returns the gone channel of the ticket id if it is one of
// this process's, nil if it is not (or was dropped).
func localTicket(id ticketID) chan struct{} {
	local.Lock()
	defer local.Unlock()
	return local.tickets[id]
}

// lifeLine is the abstract socket address of ticket t of the key file f.
func lifeLine(f fileIdentity, t uint64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%d:%d:%d", f.dev, f.ino, t))
	return "@dlock-queue/" + hex.EncodeToString(sum[:20])
}

// waiterFor reports whether ctx is a waiting acquire's attempt at req that
// may join the queue (FIFO on, Backend not closed), and returns its waiter
// state if an earlier attempt made it.
func (b *Backend) waiterFor(ctx context.Context, req dlock.AcquireRequest) (w *waiter, waiting bool) {
	if !b.opts.fifo {
		return nil, false
	}
	id, ok := dlock.WaitingLockID(ctx)
	if !ok || id != req.LockID {
		return nil, false
	}
	q := &b.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters[id], !q.closed
}

// enlist returns the waiter state of a refused waiting attempt at req,
// made on its first refusal (so that an Acquire granted at once makes
// none); it leaves the queue when ctx ends.
func (b *Backend) enlist(ctx context.Context, req dlock.AcquireRequest) *waiter {
	q := &b.queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if w := q.waiters[req.LockID]; w != nil || q.closed {
		return w
	}
	if q.waiters == nil {
		q.waiters = make(map[string]*waiter)
	}
	w := &waiter{key: req.Key, id: req.LockID, lockFD: -1, lifeFD: -1}
	q.waiters[w.id] = w
	w.stop = context.AfterFunc(ctx, func() { b.leave(w) })
	return w
}

// waiter returns the waiter with lock id, nil if there is none.
func (b *Backend) waiter(id string) *waiter {
	b.queue.mu.Lock()
	defer b.queue.mu.Unlock()
	return b.queue.waiters[id]
}

// leave forgets w and gives up its ticket. Safe on nil and more than once.
func (b *Backend) leave(w *waiter) {
	if w == nil {
		return
	}
	q := &b.queue
	q.mu.Lock()
	if q.waiters[w.id] == w {
		delete(q.waiters, w.id)
	}
	q.mu.Unlock()
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.left = true
	w.dropTicket()
}

// dropTicket gives up the ticket's lock, then its life line, so that the
// waiter behind, woken by the life line, finds the ticket gone. Called with
// w.mu held.
func (w *waiter) dropTicket() {
	if !w.joined {
		return
	}
	w.joined = false
	unix.Close(w.lockFD)
	if w.lifeFD >= 0 {
		unix.Close(w.lifeFD)
	}
	w.lockFD, w.lifeFD = -1, -1
	local.Lock()
	delete(local.tickets, ticketID{w.file, w.ticket})
	local.Unlock()
	close(w.gone)
}

// leaveAll empties the queue of a closing Backend.
func (b *Backend) leaveAll() {
	q := &b.queue
	q.mu.Lock()
	q.closed = true
	ws := make([]*waiter, 0, len(q.waiters))
	for _, w := range q.waiters {
		ws = append(ws, w)
	}
	q.mu.Unlock()
	for _, w := range ws {
		b.leave(w)
	}
}

// leaveByToken gives up the ticket of the waiting acquire that asked for
// token, if it is one of ours: the core releases the token of an acquire
// that failed, whose wait may not have ended.
func (b *Backend) leaveByToken(token string) {
	b.queue.mu.Lock()
	n := len(b.queue.waiters)
	b.queue.mu.Unlock()
	if n > 0 {
		b.leave(b.waiter(dlock.LockID(token)))
	}
}

// queryFD returns w's ticket, its key file and a new descriptor of that
// file (path), for queries that may outlive the ticket: leave closes the
// ticket's own.
func (w *waiter) queryFD(path string) (t uint64, file fileIdentity, fd int, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.joined {
		return 0, file, -1, false
	}
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return 0, file, -1, false
	}
	if id, ok := identify(fd); !ok || id != w.file {
		unix.Close(fd)
		return 0, file, -1, false
	}
	return w.ticket, w.file, fd, true
}

// ticketOf returns w's ticket, if it has one. Safe on nil.
func (w *waiter) ticketOf() (t uint64, ok bool) {
	if w == nil {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ticket, w.joined
}

// join gives w a ticket in the queue of the key file f, whose record cur
// the caller then writes (QueueNext has moved on). It fails quietly (w then
// waits without a place, as a waiter of a Backend without FIFO) where the
// file system or the descriptor limit does not allow it. Called under f's
// exclusive flock.
func (b *Backend) join(w *waiter, f *lockedFile, cur *fileRecord) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tried || w.left || cur.QueueNext >= maxTicket {
		return false
	}
	w.tried = true
	t := cur.QueueNext
	fd, err := openRetry(f.path(), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW)
	if err != nil {
		return false
	}
	id, ok := identify(fd)
	if held, ok2 := identify(f.fd); !ok || !ok2 || id != held {
		unix.Close(fd)
		return false
	}
	// The life line comes first: a live ticket always has its life line,
	// so the waiter behind never finds the one without the other and
	// spins.
	life := listen(lifeLine(id, t))
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: int64(ticketBase + t), Len: 1}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		unix.Close(fd)
		if life >= 0 {
			unix.Close(life)
		}
		return false
	}
	w.joined, w.ticket, w.file, w.lockFD, w.lifeFD = true, t, id, fd, life
	w.gone = make(chan struct{})
	local.Lock()
	local.tickets[ticketID{id, t}] = w.gone
	local.Unlock()
	cur.QueueNext = t + 1
	return true
}

// unjoin undoes a join whose record could not be written.
func (w *waiter) unjoin() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropTicket()
}

// listen makes a life line: a socket listening at the abstract address
// name, never accepted from; -1 if it cannot (then the waiter behind looks
// every deadHolderPoll).
func listen(name string) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	if unix.Bind(fd, &unix.SockaddrUnix{Name: name}) != nil || unix.Listen(fd, 8) != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// anyTicket reports whether a ticket in [from, to) is live, asking through
// fd, a descriptor of the key file that holds none of them. An error (a
// file system without such locks) counts as no.
func anyTicket(fd int, from, to uint64) bool {
	if from >= to {
		return false
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(ticketBase + from), Len: int64(to - from)}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type != unix.F_UNLCK
}

// ahead returns the live ticket just ahead of t, ok=false if t is first:
// t-1 in the usual case, else by bisection, since a range query says only
// whether some ticket in it is live.
func ahead(fd int, t uint64) (p uint64, ok bool) {
	if !anyTicket(fd, 0, t) {
		return 0, false
	}
	if anyTicket(fd, t-1, t) {
		return t - 1, true
	}
	// A live ticket is in [lo, t), none in [hi, t).
	lo, hi := uint64(0), t-1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if anyTicket(fd, mid, t) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, true
}

// countTickets returns how many tickets in [from, to) are live: a range
// query says only whether some are, so it halves the range where it does.
func countTickets(fd int, from, to uint64) int {
	switch {
	case !anyTicket(fd, from, to):
		return 0
	case to-from == 1:
		return 1
	}
	mid := from + (to-from)/2
	return countTickets(fd, from, mid) + countTickets(fd, mid, to)
}

// place is where ticket t stands: 1 first in line, 2 second, 3 further
// back (the exact number is not needed).
func place(fd int, t uint64) int {
	p, ok := ahead(fd, t)
	switch {
	case !ok:
		return 1
	case !anyTicket(fd, 0, p):
		return 2
	default:
		return 3
	}
}

// freeFor reports how long the key of cur, not held by a live lease, has
// been free. ok=false when that is unknown: a lease whose holder died
// before its expiry.
func (b *Backend) freeFor(cur *fileRecord, now instant) (d time.Duration, ok bool) {
	long := time.Duration(1<<63 - 1)
	switch {
	case now.mono == 0:
		return long, true // no clock to judge by: nobody waits for a head
	case !cur.held():
		if cur.FreedMono == 0 || cur.FreedMono > now.mono {
			return long, true // freed by a version that did not say, or another boot
		}
		return time.Duration(now.mono - cur.FreedMono), true
	case cur.BootID != b.boot:
		return long, true
	case cur.ExpiresMono <= now.mono:
		return time.Duration(now.mono - cur.ExpiresMono), true
	default:
		return 0, false
	}
}

// mayTake decides whether w (nil for a one-shot attempt or a waiter without
// a ticket) may take the key of f, whose record cur holds no live lease.
func (b *Backend) mayTake(f *lockedFile, cur *fileRecord, w *waiter, now instant) queueDecision {
	if cur.QueueNext == 0 {
		return queueDecision{grant: true}
	}
	upTo := cur.QueueNext
	if t, ok := w.ticketOf(); ok {
		upTo = t
	}
	if !anyTicket(f.fd, 0, upTo) {
		return queueDecision{grant: true}
	}
	free, known := b.freeFor(cur, now)
	if !known {
		return queueDecision{passAt: instant{wall: now.wall.Add(queueGrace), mono: now.mono + int64(queueGrace)}, markFree: true}
	}
	if free >= queueGrace {
		return queueDecision{grant: true}
	}
	left := queueGrace - free
	return queueDecision{passAt: instant{wall: now.wall.Add(left), mono: now.mono + int64(left)}}
}

// queued reports whether a ticket of the queue of f (with record cur) is
// live: the file must stay.
func queued(f *lockedFile, cur *fileRecord) bool {
	return cur.QueueNext > 0 && anyTicket(f.fd, 0, cur.QueueNext)
}

// refusal is the record of a refused attempt, with the NextLook a waiter
// gets for its place in line: the first two look when the lease ends (or
// when the first in line may be passed), the others when their life line
// says.
func (b *Backend) refusal(rec dlock.Record, w *waiter, f *lockedFile) dlock.Record {
	t, ok := w.ticketOf()
	if !ok {
		return rec
	}
	if place(f.fd, t) > 2 {
		rec.NextLook = time.Now().Add(farLook)
	}
	return rec
}

// follow wakes a queued waiter when it should look: when it becomes one of
// the first two in line, and then at every change of the key (through the
// watcher, which ch is added to). Until then it waits on the life lines of
// the two tickets just ahead, so that a waiter learns both that its turn
// came and that the one ahead became first (and may be passed if it does
// not come).
func (b *Backend) follow(ctx context.Context, w *waiter, name string, ch chan struct{}) {
	t, file, fd, ok := w.queryFD(b.dir + "/" + name)
	if !ok {
		// The ticket is gone already (or no descriptor is left): wait
		// as a waiter outside the queue.
		b.watch.add(b.dir, name, ch)
		notify(ch)
		<-ctx.Done()
		b.watch.remove(name, ch)
		return
	}
	defer unix.Close(fd)
	watching := false
	defer func() {
		if watching {
			b.watch.remove(name, ch)
		}
	}()
	lines := newLifeLines(file)
	defer lines.close()
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		p, pOK := ahead(fd, t)
		var pp uint64
		ppOK := pOK && anyTicket(fd, 0, p)
		if ppOK {
			pp, _ = ahead(fd, p)
		}
		if !ppOK && !watching {
			watching = true
			b.watch.add(b.dir, name, ch)
			notify(ch) // look now: a release may have come before the mark
		}
		if !pOK {
			<-ctx.Done()
			return
		}
		tickets := []uint64{p}
		if ppOK {
			tickets = append(tickets, pp)
		}
		switch lines.watch(fd, tickets) {
		case lineGone:
			continue
		case lineWatched:
			select {
			case x := <-lines.ended:
				if !lines.drop(x) || !anyTicket(fd, x, x+1) {
					backoff = 0
					continue
				}
			case <-ctx.Done():
				return
			}
		}
		// A life line is out of reach, or closed while its ticket still
		// looks live (its process is exiting): look again a little later.
		backoff = min(max(2*backoff, time.Millisecond), deadHolderPoll)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// lifeLines are a follower's watches on the tickets ahead of it, kept
// while they are watched: a connection to the life line of another
// process's ticket (a listener never accepts, so each connection stays in
// its backlog until it closes, and one dialled at every move up the line
// would fill it), or a wait on the gone channel of this process's.
type lifeLines struct {
	file    fileIdentity
	watches map[uint64]func() // ticket -> stops its watch
	ended   chan uint64       // tickets whose watch saw them go
	quit    chan struct{}     // closed by close
}

func newLifeLines(file fileIdentity) *lifeLines {
	return &lifeLines{file: file, watches: make(map[uint64]func()), ended: make(chan uint64), quit: make(chan struct{})}
}

// What watch found.
const (
	lineWatched     = iota // every life line is watched
	lineGone               // a ticket is gone already: look again
	lineUnreachable        // a live ticket's life line cannot be reached
)

// watch keeps watches on exactly tickets.
func (l *lifeLines) watch(fd int, tickets []uint64) int {
	for t, stop := range l.watches {
		if !slices.Contains(tickets, t) {
			stop()
			delete(l.watches, t)
		}
	}
	for _, t := range tickets {
		if l.watches[t] != nil {
			continue
		}
		if gone := localTicket(ticketID{l.file, t}); gone != nil {
			stop := make(chan struct{})
			l.watches[t] = func() { close(stop) }
			go func() {
				select {
				case <-gone:
					l.end(t)
				case <-stop:
				}
			}()
			continue
		}
		c, err := dialLifeLine(lifeLine(l.file, t))
		if err != nil {
			if anyTicket(fd, t, t+1) {
				return lineUnreachable
			}
			return lineGone
		}
		l.watches[t] = func() { c.Close() }
		go func() {
			_, _ = io.Copy(io.Discard, c) // until reset, or c is closed
			l.end(t)
		}()
	}
	return lineWatched
}

// end reports that the watch of ticket t ended.
func (l *lifeLines) end(t uint64) {
	select {
	case l.ended <- t:
	case <-l.quit:
	}
}

// drop forgets the watch of ticket t, reporting whether it was watched
// (and not one stopped by watch since).
func (l *lifeLines) drop(t uint64) bool {
	stop, ok := l.watches[t]
	if ok {
		stop()
		delete(l.watches, t)
	}
	return ok
}

func (l *lifeLines) close() {
	close(l.quit)
	for _, stop := range l.watches {
		stop()
	}
}

// errNotOurs reports a life line whose listener runs as another user: one
// that squats the address, not a waiter of ours.
var errNotOurs = errors.New("life line of another user")

// dialLifeLine connects to the life line at the abstract address name.
func dialLifeLine(name string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	var cred *unix.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cerr == nil && err == nil && int(cred.Uid) != os.Geteuid() {
		err = errNotOurs
	}
	if cerr != nil || err != nil {
		c.Close()
		return nil, errors.Join(cerr, err)
	}
	return c, nil
}
