package redislock

import (
	"fmt"
	"testing"
	"time"
)

// newTestNotifier returns a notifier with channel "c" and n waiters on it,
// without a connection: these tests drive its message handling directly.
func newTestNotifier(fifo bool, n int) (*notifier, []*waiter) {
	var nt notifier
	nt.init(nil, fifo, time.Hour)
	st := &channelState{subscribed: true}
	nt.chans["c"] = st
	ws := make([]*waiter, n)
	for i := range ws {
		ws[i] = &waiter{ch: make(chan struct{}, 1), id: fmt.Sprint("id", i)}
		st.waiters = append(st.waiters, ws[i])
	}
	return &nt, ws
}

// woken returns the indexes of the waiters with a pending wake-up and
// consumes them.
func woken(ws []*waiter) []int {
	var out []int
	for i, w := range ws {
		select {
		case <-w.ch:
			out = append(out, i)
		default:
		}
	}
	return out
}

func wantWoken(t *testing.T, ws []*waiter, what string, want ...int) {
	t.Helper()
	if got := woken(ws); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s woke waiters %v, want %v", what, got, want)
	}
}

// Without FIFO a release wakes one waiter, in turn, and a woken waiter
// that leaves passes its turn on.
func TestWakeOneInTurn(t *testing.T) {
	n, ws := newTestNotifier(false, 3)
	n.wake("c", "")
	wantWoken(t, ws, "1st release", 0)
	n.wake("c", "")
	wantWoken(t, ws, "2nd release", 1)
	n.unsubscribe("c", ws[0]) // not holding the turn: nobody else is woken
	wantWoken(t, ws, "a waiter without the turn leaving")
	n.unsubscribe("c", ws[1]) // woken last: its turn goes on
	wantWoken(t, ws, "the woken waiter leaving", 2)
	n.unsubscribe("c", ws[2])
	n.wake("c", "") // nobody left: nothing to do, no panic
	if _, ok := n.chans["c"]; ok {
		t.Error("channel state kept after its last waiter left")
	}
}

// With FIFO a release that names the queue's head wakes that waiter only,
// here or nowhere; one that names nobody wakes everyone.
func TestWakeFIFOHead(t *testing.T) {
	n, ws := newTestNotifier(true, 3)
	n.wake("c", "id1")
	wantWoken(t, ws, "release naming id1", 1)
	n.wake("c", "elsewhere")
	wantWoken(t, ws, "release naming another process's waiter")
	n.wake("c", "")
	wantWoken(t, ws, "release naming nobody", 0, 1, 2)
	n.unsubscribe("c", ws[1])
	wantWoken(t, ws, "a FIFO waiter leaving")
}

// A lost connection may have swallowed messages: everyone looks again.
func TestWakeAllOnLostConnection(t *testing.T) {
	n, ws := newTestNotifier(false, 3)
	n.lost()
	wantWoken(t, ws, "lost connection", 0, 1, 2)
}

// With FIFO a release that names a head arms a fallback, wherever the head
// waits: if no grant is announced within the grace, everyone looks again.
// An announced grant cancels it and wakes nobody.
func TestWakeFIFOFallback(t *testing.T) {
	n, ws := newTestNotifier(true, 2)
	n.grace = 10 * time.Millisecond
	st := n.chans["c"]

	n.wake("c", "elsewhere")
	if st.fallback.at.IsZero() {
		t.Fatal("a release naming another process's waiter armed no fallback")
	}
	n.wake("c", "+elsewhere:3600000:")
	wantWoken(t, ws, "a grant announced")
	if until := time.Until(st.fallback.at); until < 30*time.Minute || st.grants != 1 {
		t.Errorf("after a grant of an hour: fallback in %v, %d grants counted; want the lease's (an hour and the grace), 1", until, st.grants)
	}

	n.wake("c", "id0") // a local head that never comes
	wantWoken(t, ws, "release naming id0", 0)
	for i, w := range ws {
		select {
		case <-w.ch:
		case <-time.After(20 * time.Second): // bounds a broken fallback; not a timing claim
			t.Fatalf("waiter %d not woken by the fallback after the head failed to come", i)
		}
	}
}

// A waiter told that the key waits for a head arms a fallback, unless a
// grant was announced since it asked: that may be the head's, come before
// the reply.
func TestExpectGrant(t *testing.T) {
	n, _ := newTestNotifier(true, 1) // the grace is an hour
	st := n.chans["c"]
	seq := n.heard("c").grants
	n.wake("c", "+id0:1000:")
	leaseEnd := st.fallback.at // the lease's own, a grace after it ends
	n.expectGrant("c", seq, time.Hour)
	if !st.fallback.at.Equal(leaseEnd) {
		t.Error("fallback armed although a grant was announced since the waiter asked")
	}
	n.expectGrant("c", n.heard("c").grants, time.Hour)
	if !st.fallback.at.Before(leaseEnd) {
		t.Error("no fallback armed for a waiter behind a head")
	}
	n.expectGrant("nobody-waits", 0, time.Hour) // no channel state: nothing to do, no panic
}

// After a lease is announced, silence may mean that the next in line died
// with the holder: everyone here looks a grace after the lease ends. The
// next in line saying it found the key held puts that off to the new
// lease's end, and so does a waiter behind it being told so by the script.
func TestWakeAfterSilentLease(t *testing.T) {
	n, ws := newTestNotifier(true, 2)
	n.grace = 10 * time.Millisecond
	st := n.chans["c"]

	n.wake("c", "+granted:10:elsewhere")
	wantWoken(t, ws, "a grant announced")
	for i, w := range ws {
		select {
		case <-w.ch:
		case <-time.After(20 * time.Second): // bounds a broken fallback; not a timing claim
			t.Fatalf("waiter %d not woken a grace after a silent lease", i)
		}
	}

	n.wake("c", ">elsewhere:3600000")
	wantWoken(t, ws, "the next in line finding the key held")
	if until := time.Until(st.fallback.at); until < 30*time.Minute {
		t.Errorf("fallback in %v after the key was said held for an hour, want an hour and the grace", until)
	}

	n2, ws2 := newTestNotifier(true, 1)
	n2.grace = 10 * time.Millisecond
	n2.expectLease("c", 10*time.Millisecond)
	select {
	case <-ws2[0].ch:
	case <-time.After(20 * time.Second):
		t.Fatal("a waiter told the lease's end was not woken a grace after it")
	}
	n2.expectLease("nobody-waits", time.Hour) // no channel state: nothing to do, no panic
}

// A grant names the next in line, and a head that leaves names the one
// behind it: if that waiter waits here it is woken when the lease would
// end. Any later message stops the watch.
func TestWakeNextInLineAtLeaseEnd(t *testing.T) {
	n, ws := newTestNotifier(true, 2)
	st := n.chans["c"]

	n.wake("c", "+granted:10:id1")
	wantWoken(t, ws, "a grant announced") // nobody at once
	select {
	case <-ws[1].ch:
	case <-time.After(20 * time.Second): // bounds a broken watch; not a timing claim
		t.Fatal("the next in line was not woken when the lease would have ended")
	}
	wantWoken(t, ws, "the watch") // only the next in line

	n.wake("c", ">id0:3600000")
	if st.watch.at.IsZero() {
		t.Fatal("no watch for the waiter a leaving head named")
	}
	n.wake("c", "")
	if !st.watch.at.IsZero() {
		t.Error("a release left the watch running")
	}
	wantWoken(t, ws, "a release naming nobody", 0, 1)

	n.wake("c", "+granted:10:elsewhere") // the next waits in another process
	if !st.watch.at.IsZero() {
		t.Error("a watch armed for a waiter that does not wait here")
	}
}

// Without FIFO, the end of a lease a waiter was told of wakes the waiter
// whose turn it is, one per process; an earlier watch stands, and a
// message cancels it.
func TestWatchExpiryWakesOne(t *testing.T) {
	n, ws := newTestNotifier(false, 3)
	st := n.chans["c"]
	n.watchExpiry("c", time.Now().Add(time.Hour))
	first := st.watch.at
	n.watchExpiry("c", time.Now().Add(2*time.Hour))
	if !st.watch.at.Equal(first) {
		t.Error("a later expiry replaced an earlier watch")
	}
	n.wake("c", "") // a release
	wantWoken(t, ws, "a release", 0)
	if !st.watch.at.IsZero() {
		t.Error("a release left the expiry watch running")
	}

	n.watchExpiry("c", time.Now())
	select {
	case <-ws[1].ch: // the turn moved on from 0
	case <-time.After(20 * time.Second): // bounds a broken watch; not a timing claim
		t.Fatal("the waiter whose turn it is was not woken when the lease ended")
	}
	wantWoken(t, ws, "the lease's end")       // nobody else
	n.watchExpiry("nobody-waits", time.Now()) // no channel state: nothing to do, no panic
}

// A waiter subscribes after its refusal. It looks again at once unless
// the subscription was live from before the refusal until it subscribed
// and nothing was heard on the channel in between: a message, a lost
// connection or an UNSUBSCRIBE.
func TestMissedSinceRefusal(t *testing.T) {
	n, ws := newTestNotifier(false, 1)
	st := n.chans["c"]
	refuse := func(id string) {
		n.refused("c", id, n.heard("c")) // heard as before sending
	}

	if !st.missed("never-refused") {
		t.Error("a waiter with no refusal noted: not told to look again")
	}
	refuse("quiet")
	if st.missed("quiet") {
		t.Error("nothing heard since the refusal on a live subscription: told to look again")
	}
	if !st.missed("quiet") {
		t.Error("a refusal counted for a second subscription")
	}

	refuse("message")
	n.wake("c", "")
	wantWoken(t, ws, "the release", 0) // the registered waiter, as usual
	if !st.missed("message") {
		t.Error("a message came between refusal and subscription: not told to look again")
	}

	// With FIFO a message naming a waiter concerns that one alone.
	n.fifo = true
	refuse("head")
	refuse("other")
	n.wake("c", "head") // a release: head is first in line
	wantWoken(t, ws, "a release naming a head that does not wait here")
	if !st.missed("head") {
		t.Error("named head by a release between refusal and subscription: not told to look again")
	}
	if st.missed("other") {
		t.Error("a release named another waiter: told to look again")
	}
	refuse("next")
	n.wake("c", "+someone:1000:next") // a grant naming the next in line
	if !st.missed("next") {
		t.Error("named next in line between refusal and subscription: not told to look again")
	}
	refuse("watcher")
	n.wake("c", ">watcher:500") // the first in line found the key held
	if !st.missed("watcher") {
		t.Error("named by the first in line's look: not told to look again")
	}
	refuse("all")
	n.wake("c", "") // a break or cleanup: every waiter looks
	woken(ws)
	if !st.missed("all") {
		t.Error("a message for every waiter came: not told to look again")
	}
	n.fifo = false

	refuse("lost")
	n.lost()
	woken(ws)
	if !st.missed("lost") {
		t.Error("the connection was lost between refusal and subscription: not told to look again")
	}
	st.pending = 0 // resubscribed

	st.pending = 1 // a SUBSCRIBE not yet confirmed
	refuse("pending")
	st.pending = 0
	if !st.missed("pending") {
		t.Error("refused before the subscription was live: not told to look again")
	}

	refuse("left")
	n.unsubscribe("c", ws[0]) // the last waiter leaves: UNSUBSCRIBE
	if _, ok := st.refusals[ws[0].id]; ok {
		t.Error("a waiter that left keeps its refusal")
	}
	st.subscribed = true // another waiter subscribes again, confirmed
	if !st.missed("left") {
		t.Error("the subscription lapsed between refusal and subscription: not told to look again")
	}
}

// A connection lost while a SUBSCRIBE waits for its reply fails those
// waiting for it at once (the core asks again), and later subscribers
// wait for the resubscription's reply. If the last waiter leaves before
// that reply, none is waited for any more: a later subscriber starts
// afresh instead of waiting for a reply go-redis will not ask for.
func TestLostFailsUnconfirmedSubscribe(t *testing.T) {
	n, ws := newTestNotifier(false, 1)
	st := n.chans["c"]
	st.pending, st.ready = 1, make(chan struct{})
	unconfirmed := newSubscribeFailure()
	st.fail = unconfirmed
	n.lost()
	select {
	case <-unconfirmed.done:
		if unconfirmed.err != errLostUnconfirmed {
			t.Errorf("unconfirmed SUBSCRIBE failed with %v, want errLostUnconfirmed", unconfirmed.err)
		}
	default:
		t.Fatal("a SUBSCRIBE whose connection was lost still waits for its reply")
	}
	select {
	case <-st.fail.done:
		t.Error("later subscribers fail too, instead of waiting for the resubscription")
	default:
	}
	if st.pending != 1 {
		t.Errorf("pending replies after the loss = %d, want 1 (the resubscription)", st.pending)
	}
	n.unsubscribe("c", ws[0])
	if _, ok := n.chans["c"]; ok {
		t.Error("channel state kept for a reply nobody waits for")
	}
}
