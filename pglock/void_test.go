package pglock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// TestReleaseOvertakesAcquire: a caller that gave up on an acquire
// (timeout after sending) releases its token, and that release can reach
// the server before the acquire. The release marks the token void, so the
// acquire, when it lands, is refused and leaves the key free, instead of
// taking a lease nobody holds; other tokens are not affected.
func TestReleaseOvertakesAcquire(t *testing.T) {
	b := newBackend(t, newPool(t, startPostgres(t)))
	ctx := t.Context()
	token := "00112233445566778899aabbccddeeff"
	req := dlock.AcquireRequest{Key: "k", Token: token, LockID: dlock.LockID(token), TTL: time.Minute}

	if err := b.Release(ctx, "k", token); !errors.Is(err, dlock.ErrNotHeld) {
		t.Fatalf("Release before the acquire: %v, want ErrNotHeld", err)
	}
	if _, granted, err := b.Acquire(ctx, req); granted || !errors.Is(err, dlock.ErrNotAcquired) {
		t.Fatalf("Acquire that lands after its release: granted %v, %v; want ErrNotAcquired", granted, err)
	}
	if rec, found, err := b.Inspect(ctx, "k"); err != nil || found {
		t.Fatalf("Inspect after the void acquire = %+v, found %v, %v; want a free key", rec, found, err)
	}

	other := "ffeeddccbbaa99887766554433221100"
	req.Token, req.LockID = other, dlock.LockID(other)
	if _, granted, err := b.Acquire(ctx, req); !granted || err != nil {
		t.Fatalf("Acquire with another token: granted %v, %v", granted, err)
	}
}
