package memcachelock

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

func TestItemKeys(t *testing.T) {
	long := strings.Repeat("λ", dlock.MaxKeyLen/2)
	keys := []string{"a", "A", " a ", "a b", "../x", "日本語🔒", "a:b", "lk:x", long, long[:len(long)-2] + "x", strings.Repeat("k", 180), strings.Repeat("k", 181)}
	seen := make(map[string]string)
	for _, prefix := range []string{"", DefaultPrefix, strings.Repeat("p", maxPrefix)} {
		clear(seen)
		for _, key := range keys {
			k := itemKey(prefix, key)
			if len(k) > maxItemKey {
				t.Errorf("itemKey(%q, %.20q): %d bytes", prefix, key, len(k))
			}
			for i := 0; i < len(k); i++ {
				if k[i] <= ' ' || k[i] >= 0x7f {
					t.Errorf("itemKey(%q, %.20q) = %q: byte %#x", prefix, key, k, k[i])
				}
			}
			if other, dup := seen[k]; dup {
				t.Errorf("keys %.20q and %.20q share item %q", other, key, k)
			}
			seen[k] = key
			if !strings.HasPrefix(k, prefix) {
				t.Errorf("itemKey(%q, %.20q) = %q", prefix, key, k)
			}
		}
	}
	// Short keys stay readable; long ones are hashed.
	if k := itemKey(DefaultPrefix, "a"); k != "dlock:lk:YQ" {
		t.Errorf("itemKey(a) = %q", k)
	}
	if k := itemKey(DefaultPrefix, long); !strings.HasPrefix(k, "dlock:lh:") || len(k) != len("dlock:lh:")+64 {
		t.Errorf("itemKey(long) = %q", k)
	}
}

func TestNextFence(t *testing.T) {
	now := time.UnixMicro(1_800_000_000_000_000)
	for _, tc := range []struct {
		name string
		old  *value
		want uint64
	}{
		{"no item: the clock", nil, 1_800_000_000_000_000},
		{"old fence below the clock", &value{Fence: 5}, 1_800_000_000_000_000},
		{"old fence at the clock", &value{Fence: 1_800_000_000_000_000}, 1_800_000_000_000_001},
		{"old fence ahead of the clock", &value{Fence: 1 << 60}, 1<<60 + 1},
	} {
		if got := nextFence(tc.old, now); got != tc.want {
			t.Errorf("%s: nextFence = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestExpiration(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		ttl  time.Duration
		want int32
	}{
		{dlock.MinTTL, 2},
		{999 * time.Millisecond, 2},
		{time.Second, 2},
		{time.Second + time.Nanosecond, 3},
		{30 * time.Second, 31},
		{maxRelative*time.Second - time.Second, maxRelative},
		// Past 30 days memcached reads an absolute Unix time.
		{maxRelative*time.Second - time.Second + 1, 1_800_000_000 + maxRelative + 1},
		{dlock.MaxTTL, 1_800_000_000 + maxRelative + 1},
	} {
		got, err := expiration(tc.ttl, now)
		if err != nil || got != tc.want {
			t.Errorf("expiration(%v) = %d, %v; want %d", tc.ttl, got, err, tc.want)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := expiration(ttl, now); !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("expiration(%v) = %v, want ErrInvalidTTL", ttl, err)
		}
	}
	if _, err := expiration(dlock.MaxTTL, time.Unix(1<<31-100, 0)); !errors.Is(err, dlock.ErrInvalidTTL) {
		t.Errorf("expiration past 2038 = %v, want ErrInvalidTTL", err)
	}
}

func TestDecodeValue(t *testing.T) {
	good := &value{Version: formatVersion, Key: "k", LockID: "id", TokenSHA256: tokenHash("t"), Fence: 3,
		AcquiredAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0)}
	data, err := good.encode()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), `"t"`) {
		t.Errorf("encoded record holds the token: %s", data)
	}
	v, err := decodeValue("k", data)
	if err != nil || v.Fence != 3 || !v.holds("t", time.Unix(1, 0)) || v.holds("u", time.Unix(1, 0)) || v.live(time.Unix(2, 0)) {
		t.Errorf("decodeValue round trip = %+v, %v", v, err)
	}
	for name, data := range map[string]string{
		"not JSON":        "hello",
		"other key":       `{"v":1,"key":"other","token_sha256":"x","expires_at":"2030-01-01T00:00:00Z"}`,
		"newer version":   `{"v":2,"key":"k","token_sha256":"x","expires_at":"2030-01-01T00:00:00Z"}`,
		"no version":      `{"key":"k","token_sha256":"x","expires_at":"2030-01-01T00:00:00Z"}`,
		"lease no token":  `{"v":1,"key":"k","expires_at":"2030-01-01T00:00:00Z"}`,
		"lease no expiry": `{"v":1,"key":"k","token_sha256":"x"}`,
	} {
		if _, err := decodeValue("k", []byte(data)); !errors.Is(err, dlock.ErrCorrupt) {
			t.Errorf("decodeValue(%s) = %v, want ErrCorrupt", name, err)
		}
	}
	if v, err := decodeValue("k", []byte(`{"v":1,"key":"k","released":true}`)); err != nil || v.live(time.Unix(0, 0)) {
		t.Errorf("tombstone = %+v, %v; want a free record", v, err)
	}
}

func TestOptions(t *testing.T) {
	for name, opts := range map[string][]Option{
		"no servers":      nil,
		"space in prefix": {WithPrefix("a b")},
		"long prefix":     {WithPrefix(strings.Repeat("p", maxPrefix+1))},
		"zero timeout":    {WithTimeout(0)},
		"no idle conns":   {WithMaxIdleConns(0)},
		"missing port":    {},
	} {
		servers := []string{"127.0.0.1:11211"}
		switch name {
		case "no servers":
			servers = nil
		case "missing port":
			servers = []string{"127.0.0.1"}
		}
		if _, err := New(servers, opts...); !errors.Is(err, dlock.ErrInvalidOption) {
			t.Errorf("New(%s) = %v, want ErrInvalidOption", name, err)
		}
	}
	if _, err := New([]string{"127.0.0.1:11211"}, WithPrefix(""), WithTimeout(time.Millisecond), WithMaxIdleConns(1)); err != nil {
		t.Errorf("New with valid options: %v", err)
	}
}
