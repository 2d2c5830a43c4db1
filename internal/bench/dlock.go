package bench

import (
	"context"
	"errors"
	"time"

	"github.com/dlock-dev/dlock"
)

// DefaultTTL is the lease the scenarios take with dlock: long beside any
// critical section they run, short enough that a benchmark killed midway
// leaves nothing held for long.
const DefaultTTL = 10 * time.Second

// Dlock returns a Subject over backend b. Each worker gets its own
// dlock.Client (as separate programs would have), all sharing b and so its
// connections or descriptors, which is how one program uses dlock. opts are
// the clients' defaults; DefaultTTL applies unless they set a TTL. Calls
// through b are counted (see [Count]) and reported as "store ops" and
// "subscribes" per pair or grant.
func Dlock(name string, b dlock.Backend, opts ...dlock.Option) Subject {
	wrapped, counts := Count(b)
	opts = append([]dlock.Option{dlock.WithTTL(DefaultTTL)}, opts...)
	return Subject{
		Name: name,
		NewLocker: func(int) (Locker, error) {
			return dlockLocker{dlock.New(wrapped, opts...)}, nil
		},
		Counters: []Counter{
			{Name: CounterStoreOps, Read: func(context.Context) (uint64, error) { return counts.StoreOps(), nil }},
			{Name: CounterSubscribes, Read: func(context.Context) (uint64, error) { return counts.Subscribe.Load(), nil }},
		},
	}
}

// Names of the counters that [Dlock], [RedisCommands], [RedisCPU] and
// [RoundTrips] provide.
const (
	CounterStoreOps   = "store ops"
	CounterSubscribes = "subscribes"
	CounterRedisCmds  = "redis cmds"
	CounterRedisCPU   = "redis cpu µs"
	CounterRoundTrips = "round trips"
)

type dlockLocker struct{ c *dlock.Client }

func (l dlockLocker) TryLock(ctx context.Context, key string) (Held, bool, error) {
	lock, err := l.c.TryAcquire(ctx, key)
	if errors.Is(err, dlock.ErrNotAcquired) && ctx.Err() == nil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return dlockHeld{lock}, true, nil
}

func (l dlockLocker) Lock(ctx context.Context, key string) (Held, error) {
	lock, err := l.c.Acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	return dlockHeld{lock}, nil
}

func (l dlockLocker) Drain(ctx context.Context) error { return l.c.Drain(ctx) }

type dlockHeld struct{ l *dlock.Lock }

func (h dlockHeld) Fence() uint64                    { return h.l.Fence() }
func (h dlockHeld) Unlock(ctx context.Context) error { return h.l.Release(ctx) }
