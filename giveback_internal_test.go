package dlock

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock/internal/waitfor"
)

// unreachable grants every acquire and confirms no release, counting the
// attempts.
type unreachable struct {
	grantAll
	releases atomic.Int32
}

func (b *unreachable) Release(context.Context, string, string) error {
	b.releases.Add(1)
	return ErrUnavailable
}

// TestReleaseRetriesStopAtExpiry: a release the store never confirms is
// made again only until the lease would have expired (a few hundred
// milliseconds here), not for detach.RetryFor (a minute, twice the wait
// below): past the expiry there is nothing left to free.
func TestReleaseRetriesStopAtExpiry(t *testing.T) {
	b := &unreachable{grantAll: grantAll{refreshed: make(chan struct{}, 1)}}
	c := New(b, WithTTL(300*time.Millisecond))
	l, err := c.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Release on a store that never answers = %v, want ErrUnavailable", err)
	}
	if c.retrying.Load() != 1 {
		t.Fatalf("%d releases retrying, want 1", c.retrying.Load())
	}
	waitfor.Until(t, "the retries to stop at the lease's expiry", func() bool { return c.retrying.Load() == 0 })
	if n := b.releases.Load(); n < 2 {
		t.Errorf("Release called %d times, want the first and at least one retry", n)
	}
}

// closedClient grants every acquire and fails every release as a closed
// client does.
type closedClient struct{ unreachable }

func (b *closedClient) Release(context.Context, string, string) error {
	b.releases.Add(1)
	return ErrClosed
}

// TestReleaseThroughClosedClientNotRetried: a release through a closed
// client would fail the same way again, so it is not made again.
func TestReleaseThroughClosedClientNotRetried(t *testing.T) {
	b := &closedClient{unreachable{grantAll: grantAll{refreshed: make(chan struct{}, 1)}}}
	c := New(b)
	l, err := c.TryAcquire(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Release through a closed client = %v, want ErrClosed", err)
	}
	if n := c.retrying.Load(); n != 0 {
		t.Errorf("%d releases retrying, want 0", n)
	}
	if n := b.releases.Load(); n != 1 {
		t.Errorf("Release called %d times, want 1", n)
	}
}
