package detach

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// A call whose context ends returns at once; fn goes on, counted by the
// group, and its result reaches late.
func TestCallLeavesAndLateGetsResult(t *testing.T) {
	var g Group
	release, late := make(chan struct{}), make(chan int, 1)
	ctx, cancel := context.WithCancel(t.Context())
	entered := make(chan struct{})
	go func() { <-entered; cancel() }()
	_, err := Call(ctx, &g, func() (int, error) {
		close(entered)
		<-release
		return 7, nil
	}, func(v int) { late <- v })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Call = %v, want context.Canceled", err)
	}

	done, stop := context.WithCancel(t.Context())
	stop()
	if err := g.Wait(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait while fn runs = %v, want the context's error", err)
	}
	close(release)
	if err := g.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-late:
		if v != 7 {
			t.Errorf("late got %d, want 7", v)
		}
	default:
		t.Error("Wait returned before late ran")
	}
	if err := g.Wait(done); err != nil {
		t.Errorf("Wait with nothing running = %v, want nil on any context", err)
	}
}

// A call that finishes first returns fn's result, and late is not called.
func TestCallReturnsResult(t *testing.T) {
	var g Group
	boom := errors.New("boom")
	_, err := Call(t.Context(), &g, func() (int, error) { return 0, boom }, func(int) { t.Error("late called") })
	if !errors.Is(err, boom) {
		t.Fatalf("Call = %v, want fn's error", err)
	}
	v, err := Call(context.Background(), nil, func() (int, error) { return 3, nil }, nil)
	if v != 3 || err != nil {
		t.Fatalf("Call on a context that cannot end = %d, %v", v, err)
	}
	if err := g.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Work counted by Start keeps Wait waiting until its done is called, and a
// second done does not uncount work started since.
func TestGroupStart(t *testing.T) {
	var g Group
	ended, stop := context.WithCancel(t.Context())
	stop()
	done := g.Start()
	if err := g.Wait(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with work started = %v, want the context's error", err)
	}
	done()
	if err := g.Wait(ended); err != nil {
		t.Fatalf("Wait after done = %v, want nil", err)
	}
	other := g.Start()
	done()
	if err := g.Wait(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after a repeated done = %v, want the context's error: other work still runs", err)
	}
	other()
	if err := g.Wait(ended); err != nil {
		t.Fatalf("Wait after all done = %v, want nil", err)
	}
}

// Retry calls again until it is told to stop, and not once past stop or
// after ctx ends.
func TestRetry(t *testing.T) {
	far := time.Now().Add(time.Hour)
	n := 0
	Retry(t.Context(), far, func() bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("Retry made %d attempts, want 3 (the third said stop)", n)
	}

	n = 0
	Retry(t.Context(), time.Now(), func() bool { n++; return true })
	if n != 0 {
		t.Errorf("Retry past its stop made %d attempts, want 0", n)
	}

	ctx, cancel := context.WithCancel(t.Context())
	n = 0
	Retry(ctx, far, func() bool { n++; cancel(); return true })
	if n != 1 {
		t.Errorf("Retry made %d attempts after its context ended, want 1 before", n)
	}
}

// A release that timed out or did not reach the store is worth making
// again; one the store answered, or that found the store down or the
// client closed, is not.
func TestUnconfirmed(t *testing.T) {
	unavailable := errors.New("unavailable")
	closed := fmt.Errorf("%w: closed", unavailable)
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("not held"), false},
		{fmt.Errorf("release: %w", unavailable), true},
		{fmt.Errorf("release: %w", context.DeadlineExceeded), true},
		{context.Canceled, true},
		{fmt.Errorf("release: %w: %w", unavailable, refused), false},
		{fmt.Errorf("release: %w", closed), false},
	} {
		if got := Unconfirmed(c.err, unavailable, closed); got != c.want {
			t.Errorf("Unconfirmed(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// KeepLate marks a context, and the mark survives derived contexts.
func TestKeepLate(t *testing.T) {
	if LateKept(t.Context()) {
		t.Error("LateKept of an unmarked context")
	}
	ctx, cancel := context.WithTimeout(KeepLate(t.Context()), time.Minute)
	defer cancel()
	if !LateKept(ctx) {
		t.Error("LateKept of a context derived from a marked one = false")
	}
}
