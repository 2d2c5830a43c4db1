package pglock_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

// TestReleaseDuringAcquire: a caller that gave up on an acquire still
// running on the server (here waiting for the key's advisory lock, as it
// would behind another grant of the key) sends a release to give its
// token back, which runs alongside the acquire. Whichever of the two takes
// the key's lock first, the key must end up free, never held by nobody
// until the TTL: the release frees the grant that came first, or the
// acquire that comes after the release is refused.
func TestReleaseDuringAcquire(t *testing.T) {
	pool := newPool(t, startPostgres(t))
	b := newBackend(t, pool)
	ctx := t.Context()
	if err := b.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	// Another session holds each key's advisory lock while the test lines
	// the acquire and the release up behind it.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	keyLock := func(fn, key string) {
		t.Helper()
		if _, err := conn.Exec(ctx, `SELECT `+fn+`($1, hashtext($2))`, pglock.LockClass, key); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
	}

	type outcome struct {
		granted bool
		err     error
	}
	for _, acquireFirst := range []bool{true, false} {
		key := fmt.Sprintf("acquire first %v", acquireFirst)
		token := strings.Repeat("ab", 16)
		if !acquireFirst {
			token = strings.Repeat("cd", 16)
		}
		req := dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Hour}
		keyLock("pg_advisory_lock", key)
		acquired, released := make(chan outcome, 1), make(chan error, 1)
		acquire := func() {
			go func() {
				_, granted, err := b.Acquire(ctx, req)
				acquired <- outcome{granted, err}
			}()
		}
		release := func() { go func() { released <- b.Release(ctx, key, token) }() }
		if acquireFirst {
			acquire()
			waitForLockWaiters[error](t, conn, 1, nil)
			release()
		} else {
			release()
			waitForLockWaiters(t, conn, 1, released)
			acquire()
		}
		// The second in line waits behind the first, unless it went
		// ahead without the key's lock: a release that finds nothing to
		// free and marks the token void at once.
		waitForLockWaiters(t, conn, 2, released)
		keyLock("pg_advisory_unlock", key)
		a, r := <-acquired, <-released

		switch {
		case a.err != nil && !errors.Is(a.err, dlock.ErrNotAcquired):
			t.Fatalf("%s: Acquire = %v", key, a.err)
		case a.granted && r != nil:
			t.Errorf("%s: the acquire was granted and its release found nothing to free (%v)", key, r)
		case !a.granted && !errors.Is(r, dlock.ErrNotHeld):
			t.Errorf("%s: the acquire was refused, yet its release = %v, want ErrNotHeld", key, r)
		case acquireFirst != a.granted:
			t.Errorf("%s: granted %v, want %v", key, a.granted, acquireFirst)
		}
		if rec, found, err := b.Inspect(ctx, key); err != nil || found {
			t.Errorf("%s: Inspect = %+v, found %v, %v; want a free key", key, rec, found, err)
		}
	}
}

// waitForLockWaiters waits until n sessions wait for an advisory lock, or
// a value arrives on early (then put back for the caller).
func waitForLockWaiters[T any](t *testing.T, conn *pgxpool.Conn, n int, early chan T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case v := <-early:
			early <- v
			return
		default:
		}
		var waiting int
		err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions wait for an advisory lock after 10s, want %d", waiting, n)
		}
		time.Sleep(5 * time.Millisecond) // polling the server's lock table
	}
}
