package memcachelock

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/dlock-dev/dlock"
)

// memcached's limits and conventions.
const (
	// maxItemKey is the longest key memcached accepts, in bytes.
	maxItemKey = 250

	// maxRelative is the largest exptime memcached reads as seconds from
	// now (30 days); anything larger is an absolute Unix time.
	maxRelative = 30 * 24 * 60 * 60

	// maxPrefix bounds the prefix so that the hashed form of every key fits
	// in maxItemKey: prefix + 3-byte tag + 64 hex digits.
	maxPrefix = 64
)

// Item key tags. base64url and hex never contain ':', so within one prefix
// the two forms cannot produce the same item key.
const (
	tagPlain = "lk:" // lock record, key in base64url
	tagHash  = "lh:" // lock record, key as hex SHA-256
)

// itemKey returns the memcached key of key's lock record: prefix + "lk:" +
// base64url(key) when that fits in 250 bytes, else prefix + "lh:" +
// hex(sha256(key)). Both forms use only [A-Za-z0-9_:-] after the prefix, so
// no key can produce whitespace or control bytes, and distinct keys give
// distinct items (base64 is injective; a SHA-256 collision is not a
// practical concern, and the stored key is checked on every read).
func itemKey(prefix, key string) string {
	k := prefix + tagPlain + base64.RawURLEncoding.EncodeToString([]byte(key))
	if len(k) > maxItemKey {
		sum := sha256.Sum256([]byte(key))
		k = prefix + tagHash + hex.EncodeToString(sum[:])
	}
	return k
}

// validPrefix reports whether p may prefix item keys: at most maxPrefix
// printable ASCII bytes without spaces.
func validPrefix(p string) error {
	if len(p) > maxPrefix {
		return fmt.Errorf("prefix is %d bytes, longer than %d", len(p), maxPrefix)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("prefix byte %#x at %d is not printable ASCII", c, i)
		}
	}
	return nil
}

// expiration converts a lease's TTL into the exptime memcached stores with
// the item. memcached counts whole seconds on a clock that ticks once a
// second, so an item written with exptime n may vanish after only n-1
// seconds; rounding up and adding one second keeps the item at least as long
// as the lease. Liveness is judged by the exact expiry stored in the value,
// so the item lingering up to two seconds longer frees nothing late. An
// exptime beyond 30 days must be an absolute Unix time (memcached would read
// a larger relative number as a date in 1970 and drop the item at once).
func expiration(ttl time.Duration, now time.Time) (int32, error) {
	if ttl <= 0 {
		return 0, fmt.Errorf("%w: %v is not positive", dlock.ErrInvalidTTL, ttl)
	}
	secs := int64((ttl+time.Second-1)/time.Second) + 1
	if secs <= maxRelative {
		return int32(secs), nil
	}
	abs := now.Unix() + secs
	if abs > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %v ends after 2038, beyond memcached's 32-bit expiry", dlock.ErrInvalidTTL, ttl)
	}
	return int32(abs), nil
}

// tombstoneTTL is the exptime of the record a release or break leaves: it
// keeps the key's last fence, so that the next grant's fence is above it.
// Memory for released keys is bounded by this and by memcached's LRU.
const tombstoneTTL = maxRelative

// nextFence returns the fence of a grant that replaces old (nil when the key
// has no item): above old's fence, and at least the current Unix time in
// microseconds. The time matters only when the item was lost (first use,
// eviction, restart, flush_all, tombstone expiry): fences then keep growing
// as long as the clients' clocks do not step back.
func nextFence(old *value, now time.Time) uint64 {
	f := uint64(max(now.UnixMicro(), 0))
	if old != nil && old.Fence >= f {
		f = old.Fence + 1
	}
	return f
}

// formatVersion is the version of the stored JSON. A reader refuses records
// of a later version rather than misread and overwrite them.
const formatVersion = 1

// value is the JSON stored in a lock item. The token itself is never stored,
// only its SHA-256, so whoever can read memcached cannot release or refresh
// the lock with what they read.
type value struct {
	Version     int         `json:"v"`
	Key         string      `json:"key"`
	Released    bool        `json:"released,omitempty"`
	LockID      string      `json:"lock_id,omitempty"`
	TokenSHA256 string      `json:"token_sha256,omitempty"`
	Fence       uint64      `json:"fence,omitempty"`
	AcquiredAt  time.Time   `json:"acquired_at,omitzero"`
	ExpiresAt   time.Time   `json:"expires_at,omitzero"`
	Owner       dlock.Owner `json:"owner,omitzero"`
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// live reports whether v is a lease that has not expired at now, judged by
// the expiry stored in it (see the package doc on clocks).
func (v *value) live(now time.Time) bool {
	return !v.Released && now.Before(v.ExpiresAt)
}

// holds reports whether v is a live lease of token.
func (v *value) holds(token string, now time.Time) bool {
	return v.live(now) && v.TokenSHA256 == tokenHash(token)
}

func (v *value) record() dlock.Record {
	return dlock.Record{
		Key:        v.Key,
		LockID:     v.LockID,
		Fence:      v.Fence,
		AcquiredAt: v.AcquiredAt,
		ExpiresAt:  v.ExpiresAt,
		Owner:      v.Owner,
	}
}

// encode marshals v. It fails only for times outside years 0-9999, which a
// validated TTL cannot produce; the error is returned rather than assumed
// away.
func (v *value) encode() ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("memcachelock: encode record for %q: %w", v.Key, err)
	}
	return b, nil
}

// decodeValue parses a stored item for key. It fails with an error wrapping
// dlock.ErrCorrupt if the item is not a record of this package's format for
// key, which also catches a foreign item under our prefix.
func decodeValue(key string, data []byte) (*value, error) {
	var v value
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", dlock.ErrCorrupt, key, err)
	}
	switch {
	case v.Version != formatVersion:
		return nil, fmt.Errorf("%w: %q: format version %d, this client reads %d", dlock.ErrCorrupt, key, v.Version, formatVersion)
	case v.Key != key:
		return nil, fmt.Errorf("%w: item for %q holds a record for %q", dlock.ErrCorrupt, key, v.Key)
	case !v.Released && (v.TokenSHA256 == "" || v.ExpiresAt.IsZero()):
		return nil, fmt.Errorf("%w: %q: lease without token hash or expiry", dlock.ErrCorrupt, key)
	}
	return &v, nil
}
