package redislock

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
)

func TestKeySlot(t *testing.T) {
	// Vectors from the Redis Cluster specification.
	if got := crc16("123456789"); got != 0x31C3 {
		t.Errorf("crc16(123456789) = %#x, want 0x31c3", got)
	}
	for key, want := range map[string]uint16{
		"foo":                   12182,
		"{user1000}.following":  keySlot("user1000"),
		"foo{}{bar}":            keySlot("foo{}{bar}"), // empty first tag: whole key
		"foo{{bar}}zap":         keySlot("{bar"),
		"foo{bar}{zap}":         keySlot("bar"),
		"{}":                    keySlot("{}"),
		"a}b{c":                 keySlot("a}b{c"),
		"dlock:{tenant}:job/42": keySlot("tenant"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	tags := slotTags()
	for slot, tag := range tags {
		if tag == "" || keySlot(tag) != uint16(slot) || strings.ContainsAny(tag, "{}") {
			t.Fatalf("slot tag %q for slot %d hashes to %d", tag, slot, keySlot(tag))
		}
	}
}

// TestNames checks the names built in one buffer against plain
// concatenation.
func TestNames(t *testing.T) {
	for _, prefix := range []string{"", DefaultPrefix, "{app}:"} {
		b := &Backend{prefix: prefix}
		for _, key := range []string{"job", "{t}x", "日本語", strings.Repeat("k", dlock.MaxKeyLen)} {
			k := prefix + key
			tag := "{" + slotTag(k) + "}"
			want := names{
				lock:    k,
				meta:    tag + metaInfix + k,
				fence:   tag + fenceInfix + k,
				queue:   tag + queueInfix + k,
				expiry:  tag + expiryInfix + k,
				channel: channelPfx + k,
				tag:     tag,
			}
			for range 2 { // built, then from the cache
				if got := b.names(key); got != want {
					t.Errorf("names(%q) with prefix %q = %+v, want %+v", key, prefix, got, want)
				}
			}
		}
	}
}

// TestNameCacheBounded: a backend that locks ever new keys keeps at most
// maxNamed of them, and every key still gets its own names.
func TestNameCacheBounded(t *testing.T) {
	b := &Backend{prefix: DefaultPrefix}
	for i := range 3*maxNamed + 7 {
		key := "job-" + strconv.Itoa(i)
		if got, want := b.names(key), b.buildNames(key); got != want {
			t.Fatalf("names(%q) = %+v, want %+v", key, got, want)
		}
		if n := b.named.n.Load(); n > maxNamed {
			t.Fatalf("after %d keys the cache counts %d, above %d", i+1, n, maxNamed)
		}
	}
	cached := 0
	b.named.m.Range(func(any, any) bool { cached++; return true })
	if cached > maxNamed || cached == 0 {
		t.Errorf("cache holds %d keys, want 1..%d", cached, maxNamed)
	}
}

// TestKeysShareSlotOnCluster asks a real cluster where each key of a lock
// lives: they must all be in the lock key's slot, or the scripts would fail
// with CROSSSLOT.
func TestKeysShareSlotOnCluster(t *testing.T) {
	cluster := testserver.StartRedisCluster(t, 3)
	rdb := redis.NewClient(&redis.Options{Addr: cluster.Nodes[0].Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := t.Context()
	for _, prefix := range []string{"", DefaultPrefix, "{app}:"} {
		b := &Backend{prefix: prefix}
		for _, key := range []string{
			"job", "a}b", "{}x", "}{", "x{y}z", "{tenant}:job", "x{}{y}", "{", "}", "日本語", "sp ace",
			strings.Repeat("k", dlock.MaxKeyLen),
		} {
			n := b.names(key)
			want, err := rdb.ClusterKeySlot(ctx, n.lock).Result()
			if err != nil {
				t.Fatal(err)
			}
			if int64(keySlot(n.lock)) != want {
				t.Errorf("keySlot(%q) = %d, server says %d", n.lock, keySlot(n.lock), want)
			}
			for _, k := range n.acquireKeys("0123456789abcdef", true)[1:] {
				got, err := rdb.ClusterKeySlot(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("prefix %q key %q: %q is in slot %d, lock key in %d", prefix, key, k, got, want)
				}
			}
			if got, ok := lockKeyOfMeta(n.meta); !ok || got != n.lock {
				t.Errorf("lockKeyOfMeta(%q) = %q, %v; want %q", n.meta, got, ok, n.lock)
			}
		}
	}
}

// afterSend is a go-redis hook that lets the acquire script run on the
// server and then makes the call fail: a reply lost after the request
// landed.
type afterSend struct {
	fail     func(ctx context.Context) error
	released chan struct{} // receives after each release script
	armed    atomic.Bool
}

func (h *afterSend) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterSend) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *afterSend) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		args := cmd.Args()
		if len(args) < 2 || args[0] != "evalsha" {
			return err
		}
		switch args[1] {
		case acquireScript.Hash():
			if err == nil && h.armed.CompareAndSwap(true, false) {
				return h.fail(ctx)
			}
		case releaseScript.Hash():
			select {
			case h.released <- struct{}{}:
			default:
			}
		}
		return err
	}
}

// TestAmbiguousAcquire checks that an acquire whose reply is lost is
// reported as not acquired and that the grant, which did land, is undone.
func TestAmbiguousAcquire(t *testing.T) {
	srv := testserver.StartRedis(t)
	cases := []struct {
		name string
		fail func(ctx context.Context) error
		want error
		// timeout is the caller's deadline; 0 for none.
		timeout time.Duration
	}{
		{
			name: "transport error after send",
			fail: func(context.Context) error { return errors.New("read tcp: connection reset by peer") },
			want: dlock.ErrUnavailable,
		},
		{
			// The reply arrives only after the caller's deadline: the
			// backend returns at the deadline and the late grant is
			// released in the background.
			name: "deadline while in flight",
			fail: func(ctx context.Context) error {
				<-ctx.Done()
				time.Sleep(50 * time.Millisecond) // the reply is late
				return nil
			},
			want:    context.DeadlineExceeded,
			timeout: 100 * time.Millisecond,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { _ = rdb.Close() })
			hook := &afterSend{fail: tc.fail, released: make(chan struct{}, 1)}
			rdb.AddHook(hook)
			// The hook recognises scripts run by SHA: load them, so that
			// none falls back to EVAL.
			for _, s := range allScripts {
				if err := s.Load(t.Context(), rdb).Err(); err != nil {
					t.Fatal(err)
				}
			}
			b, err := New(rdb)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			c := dlock.New(b)
			key := t.Name() + "-key"

			ctx := t.Context()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			hook.armed.Store(true)
			l, err := c.TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
			if err == nil {
				t.Fatalf("TryAcquire with a lost reply succeeded: lock %s", l.LockID())
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("TryAcquire = %v, want %v", err, tc.want)
			}
			select {
			case <-hook.released:
			case <-time.After(10 * time.Second):
				t.Fatal("the grant that landed was never released")
			}
			if _, found, err := c.Inspect(t.Context(), key); err != nil || found {
				t.Fatalf("after the lost acquire, Inspect = found %v, %v; want free", found, err)
			}
			// It did land: the fence counter moved.
			if fence, _ := rdb.Get(t.Context(), b.names(key).fence).Int(); fence != 1 {
				t.Errorf("fence counter = %d, want 1 (the acquire landed)", fence)
			}
			l, err = c.TryAcquire(t.Context(), key)
			if err != nil {
				t.Fatalf("TryAcquire afterwards: %v", err)
			}
			if l.Fence() != 2 {
				t.Errorf("fence afterwards = %d, want 2", l.Fence())
			}
			_ = l.Release(t.Context())
		})
	}
}
