package pglock

import (
	"context"

	"github.com/dlock-dev/dlock"
)

// List implements [dlock.Lister].
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	var recs []dlock.Record
	err := b.call(ctx, "list", prefix, func(ctx context.Context) error {
		rows, err := b.pool.Query(ctx, b.sql.list, prefix)
		if err != nil {
			return err
		}
		recs, err = collect(rows)
		return err
	})
	return recs, err
}

// Stats implements [dlock.StatsReporter]: rows of live leases, and rows
// of expired ones that no acquire or [Backend.Cleanup] removed yet.
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	var active, expired int64
	err := b.call(ctx, "stats", "", func(ctx context.Context) error {
		return b.pool.QueryRow(ctx, b.sql.stats).Scan(&active, &expired)
	})
	return dlock.Stats{Total: int(active + expired), Active: int(active), Expired: int(expired)}, err
}

// Cleanup implements [dlock.Cleaner]: it deletes the rows of expired
// leases (their fences stay in the sequence) and void marks past their
// time, and wakes the waiters of each key it freed.
func (b *Backend) Cleanup(ctx context.Context) (int, error) {
	var removed, woke int64
	err := b.call(ctx, "cleanup", "", func(ctx context.Context) error {
		return b.pool.QueryRow(ctx, b.sql.cleanup, b.channel).Scan(&removed, &woke)
	})
	return int(removed), err
}

// Break implements [dlock.Breaker].
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	var recs []dlock.Record
	err := b.call(ctx, "break", key, func(ctx context.Context) error {
		rows, err := b.pool.Query(ctx, b.sql.breakLock, key, b.channel)
		if err != nil {
			return err
		}
		recs, err = collect(rows, new(int64))
		return err
	})
	if err != nil || len(recs) == 0 {
		return dlock.Record{}, false, err
	}
	return recs[0], true, nil
}
