package etcdlock

import (
	"context"
	"errors"
	"strings"

	"github.com/dlock-dev/dlock"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// List returns the live leases whose keys start with prefix, sorted by key:
// one range read of the namespace and one time-to-live query per lease.
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	var recs []dlock.Record
	err := b.call(ctx, "list", prefix, func(ctx context.Context) error {
		gs, err := b.scan(ctx, prefix)
		if err != nil {
			return err
		}
		for _, g := range gs {
			live, err := b.withExpiry(ctx, g)
			if err != nil {
				return err
			}
			if live {
				recs = append(recs, g.record())
			}
		}
		return nil
	})
	return recs, err
}

var _ dlock.QueueReporter = (*Backend)(nil)

// Waiting implements [dlock.QueueReporter]: the tickets in key's queue,
// counted by etcd.
func (b *Backend) Waiting(ctx context.Context, key string) (int, error) {
	var n int
	err := b.call(ctx, "waiting", key, func(ctx context.Context) error {
		resp, err := b.cli.Get(ctx, b.queuePrefix(key), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil {
			n = int(resp.Count)
		}
		return err
	})
	return n, err
}

// scan reads every lease whose key starts with prefix, in key order (etcd
// sorts a range by key).
func (b *Backend) scan(ctx context.Context, prefix string) ([]*grant, error) {
	resp, err := b.cli.Get(ctx, b.lockKey(prefix), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	gs := make([]*grant, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		g, err := decodeGrant(strings.TrimPrefix(string(kv.Key), b.lockKey("")), kv)
		if err != nil {
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// Stats counts the keys in the namespace. etcd deletes a key when its
// lease expires, so there are no expired records to count (one whose
// deletion is not yet committed counts as active).
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	var st dlock.Stats
	err := b.call(ctx, "stats", "", func(ctx context.Context) error {
		resp, err := b.cli.Get(ctx, b.lockKey(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		st.Total, st.Active = int(resp.Count), int(resp.Count)
		return nil
	})
	return st, err
}

// maxBreakTries bounds how often Break follows a key its holder keeps
// moving to new leases; each move needs a refresh that changes the TTL.
const maxBreakTries = 10

// Break frees key whatever its token, by revoking the key's lease. It
// revokes rather than deletes: a holder's refresh is a keep-alive of that
// lease, and a keep-alive between a delete and a revocation would tell the
// holder it still held a key that was free. If the holder moved the key to
// a new lease meanwhile, Break follows it.
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	var (
		rec   dlock.Record
		found bool
	)
	err := b.call(ctx, "break", key, func(ctx context.Context) error {
		for range maxBreakTries {
			g, err := b.get(ctx, key)
			if err != nil || g == nil {
				return err
			}
			live, err := b.withExpiry(ctx, g)
			if err != nil {
				return err
			}
			if !live {
				return nil // expired: nothing to break
			}
			rec, found = g.record(), true
			if _, err := b.cli.Revoke(ctx, clientv3.LeaseID(g.lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return err
			}
			after, err := b.get(ctx, key)
			if err != nil {
				return err
			}
			if after == nil || after.createRev != g.createRev {
				return nil // gone, or a new grant after the break
			}
		}
		return errors.New("the holder kept moving the key to new leases")
	})
	if err != nil {
		return dlock.Record{}, false, err
	}
	return rec, found, nil
}
