package redislock

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
)

// scanCount is the COUNT hint of each SCAN step; batch is how many scripts
// go in one pipeline.
const (
	scanCount = 1000
	batch     = 256
)

// List implements [dlock.Lister]. It SCANs (never KEYS) every master for
// the metadata of keys under prefix, then reads each lease with one
// script call per key, pipelined. It lists leases taken through dlock:
// another library's lock on a key has no metadata and is not listed
// (Inspect reports it).
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	keys, err := b.scan(ctx, prefix)
	if err != nil {
		return nil, b.fail(ctx, "list", prefix, err)
	}
	replies, err := b.runAll(ctx, inspectScript, keys, func(names) []any { return nil })
	if err != nil {
		return nil, b.fail(ctx, "list", prefix, err)
	}
	var out []dlock.Record
	for i, r := range replies {
		if r.state != stateHeld {
			continue
		}
		rec, err := r.record(keys[i])
		if err != nil {
			return nil, fmt.Errorf("redislock: list: %q: %w", keys[i], err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b dlock.Record) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Stats implements [dlock.StatsReporter]. Active counts live leases taken
// through dlock. Redis drops expired leases by itself, so Expired counts
// only metadata left behind by a lease that is gone (deleted by another
// tool) or was replaced by another library's lock; [Backend.Cleanup]
// removes those. A lease's metadata expires up to a millisecond after its
// key (both get the TTL, set a moment apart), and is counted in that
// millisecond.
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	keys, err := b.scan(ctx, "")
	if err != nil {
		return dlock.Stats{}, b.fail(ctx, "stats", "", err)
	}
	replies, err := b.runAll(ctx, inspectScript, keys, func(names) []any { return nil })
	if err != nil {
		return dlock.Stats{}, b.fail(ctx, "stats", "", err)
	}
	var s dlock.Stats
	for _, r := range replies {
		s.Total++
		if r.state == stateHeld {
			s.Active++
		} else {
			s.Expired++
		}
	}
	return s, nil
}

// Cleanup implements [dlock.Cleaner]: it removes the metadata Stats counts
// as expired, checking each key again atomically, so a live lease is never
// touched. Fence counters are kept.
func (b *Backend) Cleanup(ctx context.Context) (int, error) {
	keys, err := b.scan(ctx, "")
	if err != nil {
		return 0, b.fail(ctx, "cleanup", "", err)
	}
	replies, err := b.runAll(ctx, cleanupScript, keys, func(n names) []any { return []any{n.channel} })
	if err != nil {
		return 0, b.fail(ctx, "cleanup", "", err)
	}
	removed := 0
	for _, r := range replies {
		if r.state == 1 {
			removed++
		}
	}
	return removed, nil
}

// scan returns the keys (without the backend's prefix) under prefix that
// have metadata, from every master.
func (b *Backend) scan(ctx context.Context, prefix string) ([]string, error) {
	return call(ctx, &b.running, b.direct, func(ctx context.Context) ([]string, error) { return b.scanAll(ctx, prefix) }, nil)
}

func (b *Backend) scanAll(ctx context.Context, prefix string) ([]string, error) {
	full := b.prefix + prefix
	pattern := "*" + metaInfix + globEscape(full) + "*"
	var (
		mu   sync.Mutex
		keys []string
	)
	scanNode := func(ctx context.Context, c redis.Cmdable) error {
		it := c.ScanType(ctx, 0, pattern, scanCount, "string").Iterator()
		for it.Next(ctx) {
			meta := it.Val()
			k, ok := lockKeyOfMeta(meta)
			if !ok || !strings.HasPrefix(k, full) {
				continue
			}
			key := k[len(b.prefix):]
			// A key that merely contains metaInfix matches the pattern;
			// only the exact name belongs to a lock.
			if b.names(key).meta != meta {
				continue
			}
			mu.Lock()
			keys = append(keys, key)
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	switch c := b.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scanNode(ctx, node) })
	case *redis.Ring:
		err = c.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error { return scanNode(ctx, node) })
	default:
		err = scanNode(ctx, b.rdb)
	}
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// runAll runs script once per key, pipelined in batches.
func (b *Backend) runAll(ctx context.Context, s *redis.Script, keys []string, args func(names) []any) ([]reply, error) {
	out := make([]reply, 0, len(keys))
	for start := 0; start < len(keys); start += batch {
		chunk := keys[start:min(start+batch, len(keys))]
		replies, err := call(ctx, &b.running, b.direct, func(ctx context.Context) ([]reply, error) {
			return b.runBatch(ctx, s, chunk, args)
		}, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, replies...)
	}
	return out, nil
}

func (b *Backend) runBatch(ctx context.Context, s *redis.Script, keys []string, args func(names) []any) ([]reply, error) {
	calls := make([]scriptCall, len(keys))
	for i, key := range keys {
		n := b.names(key)
		calls[i] = scriptCall{script: s, keys: n.pair(), args: args(n)}
	}
	replies, errs := runPipelined(ctx, b.rdb, calls, replicaWait{})
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return replies, nil
}
