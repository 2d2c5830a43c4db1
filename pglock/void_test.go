package pglock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/pglock"
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

// TestRefusalLocksNothing: refused acquires leave the holder's row as it
// was, not even locked (its xmax stays 0): a refusal commits nothing a
// durable server must flush to disk, so waiters that look cost the server
// reads only.
func TestRefusalLocksNothing(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	table := uniqueTable()
	b := newBackend(t, pool, pglock.WithTable(table))
	ctx := t.Context()
	c := dlock.New(b)
	if _, err := c.TryAcquire(ctx, "k", dlock.WithTTL(time.Minute)); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := c.TryAcquire(ctx, "k"); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire of a held key: %v, want ErrNotAcquired", err)
		}
	}
	var xmax string
	if err := pool.QueryRow(ctx, `SELECT xmax::text FROM `+table+` WHERE key = 'k'`).Scan(&xmax); err != nil {
		t.Fatal(err)
	}
	if xmax != "0" {
		t.Errorf("the holder's row has xmax %s after refusals, want 0 (a refusal locked it)", xmax)
	}
}
