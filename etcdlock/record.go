package etcdlock

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dlock-dev/dlock"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// formatVersion is the version of the stored JSON. A reader refuses values
// of a later version rather than misread them.
const formatVersion = 1

// value is the JSON stored under a lock's etcd key. The token itself is
// never stored, only its SHA-256, so whoever can read etcd cannot release
// or refresh the lock with what they read. The fence is not stored: it is
// the key's create revision.
type value struct {
	Version     int         `json:"v"`
	Key         string      `json:"key"`
	LockID      string      `json:"lock_id"`
	TokenSHA256 string      `json:"token_sha256"`
	AcquiredAt  time.Time   `json:"acquired_at,omitzero"`
	LeaseTTL    int64       `json:"lease_ttl"` // whole seconds asked of etcd
	Owner       dlock.Owner `json:"owner,omitzero"`
}

func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (v *value) encode() (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("etcdlock: encode record for %q: %w", v.Key, err)
	}
	return string(b), nil
}

// grant is a lease as stored: the decoded value and what etcd keeps beside
// it.
type grant struct {
	value
	lease     int64 // etcd lease the key is attached to
	createRev int64 // the fence
	expiresAt time.Time
}

// decodeGrant parses the key-value etcd returned for key. It fails with an
// error wrapping dlock.ErrCorrupt if it is not a lease of this package's
// format for key, which also catches a foreign key under the prefix.
func decodeGrant(key string, kv *mvccpb.KeyValue) (*grant, error) {
	g := &grant{lease: kv.Lease, createRev: kv.CreateRevision}
	if err := json.Unmarshal(kv.Value, &g.value); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", dlock.ErrCorrupt, key, err)
	}
	switch {
	case g.Version != formatVersion:
		return nil, fmt.Errorf("%w: %q: format version %d, this client reads %d", dlock.ErrCorrupt, key, g.Version, formatVersion)
	case g.Key != key:
		return nil, fmt.Errorf("%w: etcd key for %q holds a record for %q", dlock.ErrCorrupt, key, g.Key)
	case g.TokenSHA256 == "" || g.LockID == "":
		return nil, fmt.Errorf("%w: %q: lease without token hash or lock id", dlock.ErrCorrupt, key)
	case kv.Lease == 0:
		// A key without a lease would never expire: not written by us.
		return nil, fmt.Errorf("%w: %q: key has no etcd lease", dlock.ErrCorrupt, key)
	}
	return g, nil
}

func (g *grant) holds(token string) bool { return g.TokenSHA256 == tokenHash(token) }

func (g *grant) record() dlock.Record {
	return dlock.Record{
		Key:        g.Key,
		LockID:     g.LockID,
		Fence:      uint64(g.createRev),
		AcquiredAt: g.AcquiredAt,
		ExpiresAt:  g.expiresAt,
		Owner:      g.Owner,
	}
}

// leaseSeconds is the etcd lease TTL for a dlock TTL: etcd counts whole
// seconds, so it is rounded up; the lease then never ends before the
// holder's validity does.
func leaseSeconds(ttl time.Duration) int64 {
	return int64((ttl + time.Second - 1) / time.Second)
}
