package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	bsm "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/gofrs/flock"
	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock/internal/bench"
)

// The peers are used as their documentation shows, with the lease set to
// dlock's bench TTL so that every library holds the same lease. Where a
// library waits by polling, its documented delays are kept: they are what
// its users get, and they decide both its wait times and its store
// operations per grant.

// redsyncSubject is go-redsync/redsync over go-redis clients, one "pool"
// per master (one in the Redis group, so a quorum of one, as its README
// shows; three in the Redlock group). Expiry is set to the
// bench TTL (default 8s). Tries is unbounded (default 32) so that a
// contended waiter waits until the run ends like the others' waiters,
// instead of failing after 32 attempts; the delay between tries stays the
// default, random in 50-250ms. A failed attempt also sends redsync's
// release script (it cleans up a partial quorum), so each poll is two
// round trips.
func redsyncSubject(masters ...redis.UniversalClient) bench.Subject {
	var pools []redsyncredis.Pool
	for _, rdb := range masters {
		pools = append(pools, redsyncgoredis.NewPool(rdb))
	}
	rs := redsync.New(pools...)
	opts := []redsync.Option{redsync.WithExpiry(bench.DefaultTTL), redsync.WithTries(math.MaxInt32)}
	return bench.Subject{
		Name:      "redsync",
		NewLocker: func(int) (bench.Locker, error) { return redsyncLocker{rs, opts}, nil },
	}
}

type redsyncLocker struct {
	rs   *redsync.Redsync
	opts []redsync.Option
}

func (l redsyncLocker) TryLock(ctx context.Context, key string) (bench.Held, bool, error) {
	m := l.rs.NewMutex(key, l.opts...)
	err := m.TryLockContext(ctx)
	var taken *redsync.ErrTaken
	switch {
	case err == nil:
		return redsyncHeld{m}, true, nil
	case errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken):
		return nil, false, nil
	}
	return nil, false, err
}

func (l redsyncLocker) Lock(ctx context.Context, key string) (bench.Held, error) {
	m := l.rs.NewMutex(key, l.opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return redsyncHeld{m}, nil
}

type redsyncHeld struct{ m *redsync.Mutex }

func (h redsyncHeld) Fence() uint64 { return 0 }

func (h redsyncHeld) Unlock(ctx context.Context) error {
	ok, err := h.m.UnlockContext(ctx)
	if err == nil && !ok {
		err = errors.New("redsync: unlock: not held")
	}
	return err
}

// bsmSubject is bsm/redislock. Its default is one attempt (NoRetry), used
// for serial and parallel. For contended it retries with
// LinearBackoff(100ms), the strategy of its README's retry example, without
// the example's LimitRetry(…, 3) so that waiters wait until the run ends.
func bsmSubject(rdb redis.UniversalClient) bench.Subject {
	c := bsm.New(rdb)
	return bench.Subject{
		Name:      "bsm/redislock",
		NewLocker: func(int) (bench.Locker, error) { return bsmLocker{c}, nil },
	}
}

type bsmLocker struct{ c *bsm.Client }

func (l bsmLocker) TryLock(ctx context.Context, key string) (bench.Held, bool, error) {
	lock, err := l.c.Obtain(ctx, key, bench.DefaultTTL, nil)
	switch {
	case err == nil:
		return bsmHeld{lock}, true, nil
	case errors.Is(err, bsm.ErrNotObtained):
		return nil, false, nil
	}
	return nil, false, err
}

func (l bsmLocker) Lock(ctx context.Context, key string) (bench.Held, error) {
	opt := &bsm.Options{RetryStrategy: bsm.LinearBackoff(100 * time.Millisecond)}
	for {
		lock, err := l.c.Obtain(ctx, key, bench.DefaultTTL, opt)
		// Without a deadline on ctx, Obtain gives up after one TTL; a
		// starved waiter asks again, as its caller would.
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return nil, err
		}
		return bsmHeld{lock}, nil
	}
}

type bsmHeld struct{ l *bsm.Lock }

func (h bsmHeld) Fence() uint64                    { return 0 }
func (h bsmHeld) Unlock(ctx context.Context) error { return h.l.Release(ctx) }

// flockSubject is gofrs/flock on files in dir, one file per key and one
// flock.Flock per worker and key (a Flock is one open file; flock(2) locks
// belong to the open file, so two Flocks exclude each other even in one
// process). TryLock and Unlock for serial and parallel; the blocking Lock
// for contended, which waits in the kernel rather than polling. It has no
// lease (a lock lasts until Unlock or the process's death) and no fence:
// the semantics differ from dlock's, the use (one host) is the same.
func flockSubject(dir string) bench.Subject {
	return bench.Subject{
		Name: "gofrs/flock",
		NewLocker: func(int) (bench.Locker, error) {
			return &flockLocker{dir: dir, locks: map[string]*flock.Flock{}}, nil
		},
	}
}

type flockLocker struct {
	dir   string
	locks map[string]*flock.Flock // a worker's Flocks, by key
}

func (l *flockLocker) flock(key string) *flock.Flock {
	f, ok := l.locks[key]
	if !ok {
		f = flock.New(filepath.Join(l.dir, strings.ReplaceAll(key, "/", "_")+".lock"))
		l.locks[key] = f
	}
	return f
}

func (l *flockLocker) TryLock(_ context.Context, key string) (bench.Held, bool, error) {
	f := l.flock(key)
	ok, err := f.TryLock()
	if err != nil || !ok {
		return nil, false, err
	}
	return flockHeld{f}, true, nil
}

// Lock blocks in flock(2), which cannot be cancelled: when the run ends a
// waiter gets the lock once the others have stopped, and then stops too.
func (l *flockLocker) Lock(_ context.Context, key string) (bench.Held, error) {
	f := l.flock(key)
	if err := f.Lock(); err != nil {
		return nil, err
	}
	return flockHeld{f}, nil
}

type flockHeld struct{ f *flock.Flock }

func (h flockHeld) Fence() uint64                { return 0 }
func (h flockHeld) Unlock(context.Context) error { return h.f.Unlock() }

// tempDir makes a scratch directory for a file subject under base.
func tempDir(base, name string) (string, error) {
	dir, err := os.MkdirTemp(base, "dlock-peers-"+name+"-*")
	if err != nil {
		return "", fmt.Errorf("peers: %w", err)
	}
	return dir, nil
}
