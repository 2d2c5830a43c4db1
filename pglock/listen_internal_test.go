package pglock

import (
	"testing"
)

// These tests drive the listener's bookkeeping directly, as the backend's
// Acquire, Subscribe and listening connection would; the connection
// itself is tested against a real server in wake_test.go.

// newTestListener returns a listener that is listening, without a
// connection (its goroutine counts as running, so none is started).
func newTestListener() *listener {
	l := newListener(nil)
	l.running, l.listening = true, true
	return l
}

// waitOn has waiter id make a refused attempt on key and subscribe, as a
// waiting Client.Acquire does.
func waitOn(t *testing.T, l *listener, key, id string) (<-chan struct{}, func()) {
	t.Helper()
	l.arm(key, id)
	l.settle(id, true, false, false)
	ch, cancel, err := l.subscribe(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return ch, cancel
}

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestReleaseWakesOldestSleeperOnly(t *testing.T) {
	l := newTestListener()
	a, cancelA := waitOn(t, l, "k", "a")
	b, _ := waitOn(t, l, "k", "b")
	other, _ := waitOn(t, l, "other", "c")
	if woken(a) || woken(b) || woken(other) {
		t.Fatal("a waiter whose attempt was sent while listening was woken by subscribing")
	}
	l.deliver("k")
	if !woken(a) || woken(b) || woken(other) {
		t.Fatal("a release did not wake exactly the longest waiter of its key")
	}
	// a looks again and is refused (another process took the key): the
	// next release is a's again, first come first served.
	l.arm("k", "a")
	l.settle("a", true, false, false)
	l.deliver("k")
	if !woken(a) || woken(b) {
		t.Fatal("the next release did not wake the longest waiter again")
	}
	// a looks again, is granted and stops waiting: the release after
	// that is b's.
	l.arm("k", "a")
	l.settle("a", false, false, false)
	cancelA()
	if woken(b) {
		t.Fatal("a waiter that was granted woke the next one")
	}
	l.deliver("k")
	if !woken(b) {
		t.Fatal("the release after the first waiter's grant did not wake the next one")
	}
}

func TestReleaseWakesAttemptInFlight(t *testing.T) {
	l := newTestListener()
	a, _ := waitOn(t, l, "k", "a")
	l.arm("k", "a") // looking again when the release comes
	l.deliver("k")
	l.settle("a", true, false, false) // refused: it saw the key before the release
	if !woken(a) {
		t.Fatal("a waiter refused by a look that raced a release was not woken")
	}
}

func TestWokenWaiterLeavingHandsOn(t *testing.T) {
	l := newTestListener()
	_, cancelA := waitOn(t, l, "k", "a")
	b, _ := waitOn(t, l, "k", "b")
	l.deliver("k")
	cancelA() // a gave up before it looked again
	if !woken(b) {
		t.Fatal("the wake-up of a waiter that left was lost")
	}
}

func TestRefusedNotYetSubscribedIsWoken(t *testing.T) {
	l := newTestListener()
	l.arm("k", "a")
	l.settle("a", true, false, false)
	l.deliver("k") // between the refusal and Subscribe
	ch, _, err := l.subscribe("k", "a")
	if err != nil {
		t.Fatal(err)
	}
	if !woken(ch) {
		t.Fatal("a release between the refusal and Subscribe was lost")
	}
}

func TestNotListeningWakesOnSubscribeAndReconnect(t *testing.T) {
	l := newTestListener()
	l.listening = false
	a, _ := waitOn(t, l, "k", "a")
	if !woken(a) {
		t.Fatal("a waiter whose attempt nobody heard was not woken by subscribing")
	}
	l.arm("k", "a") // it looked again, still unheard
	l.settle("a", true, false, false)
	l.setListening(true)
	if !woken(a) {
		t.Fatal("a waiter unheard since it looked was not woken once the backend listened")
	}
	l.setListening(false)
	if woken(a) {
		t.Fatal("a lost connection woke a waiter (it would look while the server is likely down)")
	}
	l.setListening(true)
	if !woken(a) {
		t.Fatal("a waiter unheard during an outage was not woken once the backend listened again")
	}
}

func TestGrantedWaiterLeaves(t *testing.T) {
	l := newTestListener()
	l.arm("k", "a")
	l.settle("a", false, false, false) // granted at once: no Subscribe follows
	if len(l.byID) != 0 || len(l.byKey) != 0 {
		t.Fatalf("a granted attempt left %d waiters behind", len(l.byID))
	}
}
