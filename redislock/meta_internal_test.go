package redislock

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// TestMetaBlobRoundTrip stores grants whose owner strings cross every
// MessagePack string size class and reads them back through the scripts
// (Lua's cmsgpack decodes what metaBlob encoded).
func TestMetaBlobRoundTrip(t *testing.T) {
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	b, err := New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx := t.Context()
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		owner := dlock.Owner{Host: strings.Repeat("h", n), PID: 1<<31 - 1, Label: strings.Repeat("é", n/2)}
		key := "meta-" + string(rune('a'+n%26)) + strings.Repeat("x", n%7)
		token := strings.Repeat("t", 32)
		at := time.Now()
		if _, ok, err := b.Acquire(ctx, dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Minute, Owner: owner}); err != nil || !ok {
			t.Fatalf("size %d: Acquire = %v, %v", n, ok, err)
		}
		rec, found, err := b.Inspect(ctx, key)
		if err != nil || !found {
			t.Fatalf("size %d: Inspect = %v, %v", n, found, err)
		}
		if rec.Owner != owner || rec.LockID != dlock.LockID(token) || rec.Fence != 1 {
			t.Errorf("size %d: read back owner %.20q/%d/%.20q, id %s, fence %d", n, rec.Owner.Host, rec.Owner.PID, rec.Owner.Label, rec.LockID, rec.Fence)
		}
		if d := rec.AcquiredAt.Sub(at); d < -time.Millisecond || d > time.Minute {
			t.Errorf("size %d: acquired at %v, want about %v", n, rec.AcquiredAt, at)
		}
		if err := b.Release(ctx, key, token); err != nil {
			t.Fatal(err)
		}
	}
}
