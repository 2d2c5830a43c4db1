package memcachelock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/detach"
)

// Backend keeps locks in memcached. It is safe for concurrent use. The zero
// value is not usable; call [New].
type Backend struct {
	mc      *memcache.Client
	servers []string // as given, in order: the order decides which server holds a key
	prefix  string
	timeout time.Duration

	running detach.Group // calls whose callers may leave, for Drain
}

var (
	_ dlock.Backend       = (*Backend)(nil)
	_ dlock.Breaker       = (*Backend)(nil)
	_ dlock.Drainer       = (*Backend)(nil)
	_ dlock.Lister        = (*Backend)(nil)
	_ dlock.StatsReporter = (*Backend)(nil)
)

// DefaultPrefix is the prefix of every item key unless [WithPrefix] sets
// another.
const DefaultPrefix = "dlock:"

// DefaultTimeout bounds each network read, write and dial unless
// [WithTimeout] sets another.
const DefaultTimeout = time.Second

// Option configures a [Backend].
type Option func(*options)

type options struct {
	prefix  string
	timeout time.Duration
	maxIdle int
	errs    []error
}

// WithPrefix sets the prefix of every memcached key this backend writes
// (default [DefaultPrefix]). Clients that share locks must use the same
// prefix; different prefixes are separate namespaces. End it with a
// separator such as ':' so that one prefix is never the start of another.
// A prefix longer than 64 bytes, or with bytes other than printable ASCII
// without space, makes [New] fail with [dlock.ErrInvalidOption].
func WithPrefix(p string) Option {
	return func(o *options) {
		if err := validPrefix(p); err != nil {
			o.errs = append(o.errs, err)
			return
		}
		o.prefix = p
	}
}

// WithTimeout bounds each network dial, read and write (default
// [DefaultTimeout]). It limits calls whose context has no deadline and how
// long an abandoned call may linger in the background (see the package doc).
// A timeout that is not positive makes [New] fail with
// [dlock.ErrInvalidOption].
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.errs = append(o.errs, fmt.Errorf("timeout %v is not positive", d))
			return
		}
		o.timeout = d
	}
}

// WithMaxIdleConns sets how many idle connections are kept per server
// (default 16). Set it above the number of lock operations you expect at
// once, or busy moments will open and close connections. A value below 1
// makes [New] fail with [dlock.ErrInvalidOption].
func WithMaxIdleConns(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.errs = append(o.errs, fmt.Errorf("max idle conns %d is below 1", n))
			return
		}
		o.maxIdle = n
	}
}

// New returns a backend over the memcached servers given as "host:port" (or
// a Unix socket path). With several servers each key lives on one of them,
// picked by a hash of its item key and the position of the server in the
// list: every client sharing locks must list the same servers in the same
// order (see the package doc on several servers). Host names are resolved
// once, here. New does not connect; the first operation does.
//
// Errors wrap [dlock.ErrInvalidOption] for a bad option or server address,
// and [dlock.ErrUnavailable] when a host name does not resolve.
func New(servers []string, opts ...Option) (*Backend, error) {
	o := options{prefix: DefaultPrefix, timeout: DefaultTimeout, maxIdle: 16}
	for _, opt := range opts {
		opt(&o)
	}
	if len(servers) == 0 {
		o.errs = append(o.errs, errors.New("no servers"))
	}
	for _, s := range servers {
		if strings.TrimSpace(s) == "" {
			o.errs = append(o.errs, errors.New("empty server address"))
		}
	}
	if err := errors.Join(o.errs...); err != nil {
		return nil, fmt.Errorf("memcachelock: %w: %w", dlock.ErrInvalidOption, err)
	}
	var sl memcache.ServerList
	if err := sl.SetServers(servers...); err != nil {
		// A name that does not resolve may be a DNS outage, not a typo.
		kind := dlock.ErrInvalidOption
		if _, ok := errors.AsType[*net.DNSError](err); ok {
			kind = dlock.ErrUnavailable
		}
		return nil, fmt.Errorf("memcachelock: %w: servers %q: %w", kind, servers, err)
	}
	mc := memcache.NewFromSelector(&sl)
	mc.Timeout = o.timeout
	mc.MaxIdleConns = o.maxIdle
	return &Backend{mc: mc, servers: append([]string(nil), servers...), prefix: o.prefix, timeout: o.timeout}, nil
}

// Close closes idle connections. The Backend stays usable and opens new
// connections as needed. Call [Backend.Drain] (or dlock's Client.Drain)
// first, so that calls still running in the background are not cut short.
func (b *Backend) Close() error { return b.mc.Close() }

// Drain implements [dlock.Drainer]: it waits until no call runs in the
// background, or ctx ends. A call whose caller left when its context ended
// goes on until it completes or its socket timeout passes; an acquire that
// lands after its caller left is then released, which Drain waits for too.
func (b *Backend) Drain(ctx context.Context) error { return b.running.Wait(ctx) }

// maxRaces bounds the retries of an operation whose compare-and-swap lost to
// a concurrent change. Each lost race means another client's write landed,
// so a long run of them is not contention but a store that keeps changing.
const maxRaces = 16

// call runs fn, a blocking gomemcache call, and returns its result, or the
// context's error as soon as ctx ends. gomemcache takes no context, so a call
// cut short keeps running in the background until it completes or its
// socket timeout passes (Drain waits for it); if it then succeeds, late (if
// not nil) receives its result. Otherwise its outcome is unknown to the
// caller, which the core handles (it gives back an acquire whose reply was
// lost).
func call[T any](ctx context.Context, b *Backend, fn func() (T, error), late func(T)) (T, error) {
	return detach.Call(ctx, &b.running, fn, late)
}

func (b *Backend) get(ctx context.Context, itemKey string) (*memcache.Item, error) {
	return call(ctx, b, func() (*memcache.Item, error) { return b.mc.Get(itemKey) }, nil)
}

// write adds it, or with swap replaces the item it was read as (a
// compare-and-swap). undo, if not nil, runs if the write succeeds after
// ctx ended.
func (b *Backend) write(ctx context.Context, it *memcache.Item, swap bool, undo func()) error {
	var late func(struct{})
	if undo != nil {
		late = func(struct{}) { undo() }
	}
	_, err := call(ctx, b, func() (struct{}, error) {
		if swap {
			return struct{}{}, b.mc.CompareAndSwap(it)
		}
		return struct{}{}, b.mc.Add(it)
	}, late)
	return err
}

// fail wraps an unexpected error of op on key: context errors stay as they
// are (wrapped, so errors.Is finds them), errors that are already typed keep
// their type, and everything else — refused or broken connections, timeouts,
// SERVER_ERROR replies — wraps dlock.ErrUnavailable.
func fail(op, key string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, dlock.ErrCorrupt), errors.Is(err, dlock.ErrInvalidTTL),
		errors.Is(err, dlock.ErrUnavailable):
		return fmt.Errorf("memcachelock: %s %q: %w", op, key, err)
	}
	return fmt.Errorf("memcachelock: %s %q: %w: %w", op, key, dlock.ErrUnavailable, err)
}

// load reads key's lock item. It returns a nil item when there is none.
func (b *Backend) load(ctx context.Context, key, itemKey string) (*memcache.Item, *value, error) {
	it, err := b.get(ctx, itemKey)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	v, err := decodeValue(key, it.Value)
	if err != nil {
		return nil, nil, err
	}
	return it, v, nil
}

// Acquire implements [dlock.Backend]: one "add" when the key has no item,
// else a compare-and-swap over an item that is free (a released record, or
// a lease whose stored expiry has passed). Either write fails if another
// client wrote first, and the attempt starts over. The fence is computed
// from the item read, so the swap also guarantees it is above the fence of
// every grant the item has recorded.
//
// Errors wrap [dlock.ErrInvalidTTL] for a TTL memcached cannot represent,
// [dlock.ErrCorrupt] for an item that is not a record of this package, and
// [dlock.ErrUnavailable] for transport errors; context errors are returned
// as they are.
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	exp, err := expiration(req.TTL, time.Now())
	if err != nil {
		return dlock.Record{}, false, fail("acquire", req.Key, err)
	}
	lockKey := itemKey(b.prefix, req.Key)
	for range maxRaces {
		it, old, err := b.load(ctx, req.Key, lockKey)
		if err != nil {
			return dlock.Record{}, false, fail("acquire", req.Key, err)
		}
		now := time.Now()
		if old != nil && old.live(now) {
			return old.record(), false, nil
		}
		v := &value{
			Version:     formatVersion,
			Key:         req.Key,
			LockID:      req.LockID,
			TokenSHA256: tokenHash(req.Token),
			Fence:       nextFence(old, now),
			AcquiredAt:  now,
			ExpiresAt:   now.Add(req.TTL),
			Owner:       req.Owner,
		}
		data, err := v.encode()
		if err != nil {
			return dlock.Record{}, false, err
		}
		// A write that lands after the caller left would take the key for
		// nobody until the TTL, if the core's give-back (a release) got
		// there first: undo it. (A caller whose ctx cannot end waits.)
		var undo func()
		if ctx.Done() != nil {
			undo = func() {
				ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
				defer cancel()
				_ = b.Release(ctx, req.Key, req.Token)
			}
		}
		if it == nil {
			err = b.write(ctx, &memcache.Item{Key: lockKey, Value: data, Expiration: exp}, false, undo)
		} else {
			it.Value, it.Expiration = data, exp
			err = b.write(ctx, it, true, undo)
		}
		switch {
		case err == nil:
			return v.record(), true, nil
		case errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCASConflict):
			continue // another client wrote first: look again
		default:
			return dlock.Record{}, false, fail("acquire", req.Key, err)
		}
	}
	return dlock.Record{}, false, fail("acquire", req.Key, errors.New("the item changed under every attempt"))
}

// Refresh implements [dlock.Backend]: a compare-and-swap of the item read,
// so a lease taken over or released in between is never extended. Errors
// wrap [dlock.ErrNotHeld] when token does not hold a live lease on key, and
// otherwise are as for [Backend.Acquire].
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	exp, err := expiration(ttl, time.Now())
	if err != nil {
		return dlock.Record{}, fail("refresh", key, err)
	}
	lockKey := itemKey(b.prefix, key)
	for range maxRaces {
		it, v, err := b.load(ctx, key, lockKey)
		if err != nil {
			return dlock.Record{}, fail("refresh", key, err)
		}
		if v == nil || !v.holds(token, time.Now()) {
			return dlock.Record{}, fmt.Errorf("memcachelock: refresh %q: %w", key, dlock.ErrNotHeld)
		}
		v.ExpiresAt = time.Now().Add(ttl)
		if it.Value, err = v.encode(); err != nil {
			return dlock.Record{}, err
		}
		it.Expiration = exp
		err = b.write(ctx, it, true, nil)
		switch {
		case err == nil:
			return v.record(), nil
		case errors.Is(err, memcache.ErrCASConflict):
			continue // changed since the read (perhaps our own other refresh): judge again
		case errors.Is(err, memcache.ErrNotStored):
			return dlock.Record{}, fmt.Errorf("memcachelock: refresh %q: %w: the item vanished", key, dlock.ErrNotHeld)
		default:
			return dlock.Record{}, fail("refresh", key, err)
		}
	}
	return dlock.Record{}, fail("refresh", key, errors.New("the item changed under every attempt"))
}

// Release implements [dlock.Backend]. It never deletes blindly: it reads the
// item, checks the token and swaps the item (compare-and-swap) for a
// released record that keeps the fence. The swap fails if any client changed
// the item since it was read, so a lease acquired in between is never
// removed. Errors are as for [Backend.Refresh].
func (b *Backend) Release(ctx context.Context, key, token string) error {
	_, err := b.remove(ctx, "release", key, func(v *value) bool { return v.holds(token, time.Now()) })
	return err
}

// Break implements [dlock.Breaker]: like [Backend.Release] whatever the
// token. It returns the broken lease, with found=false if the key was free.
func (b *Backend) Break(ctx context.Context, key string) (dlock.Record, bool, error) {
	v, err := b.remove(ctx, "break", key, func(v *value) bool { return v.live(time.Now()) })
	if errors.Is(err, dlock.ErrNotHeld) {
		return dlock.Record{}, false, nil
	}
	if err != nil {
		return dlock.Record{}, false, err
	}
	return v.record(), true, nil
}

// remove compare-and-deletes key's lease if match accepts it, returning the
// lease removed, or an error wrapping dlock.ErrNotHeld if match refused it.
func (b *Backend) remove(ctx context.Context, op, key string, match func(*value) bool) (*value, error) {
	lockKey := itemKey(b.prefix, key)
	for range maxRaces {
		it, v, err := b.load(ctx, key, lockKey)
		if err != nil {
			return nil, fail(op, key, err)
		}
		if v == nil || !match(v) {
			return nil, fmt.Errorf("memcachelock: %s %q: %w", op, key, dlock.ErrNotHeld)
		}
		// The tombstone frees the key and keeps its fence for the next grant.
		tomb := &value{Version: formatVersion, Key: key, Released: true, Fence: v.Fence}
		if it.Value, err = tomb.encode(); err != nil {
			return nil, err
		}
		it.Expiration = tombstoneTTL
		err = b.write(ctx, it, true, nil)
		switch {
		case err == nil:
			return v, nil
		case errors.Is(err, memcache.ErrCASConflict):
			continue
		case errors.Is(err, memcache.ErrNotStored):
			return nil, fmt.Errorf("memcachelock: %s %q: %w: the item vanished", op, key, dlock.ErrNotHeld)
		default:
			return nil, fail(op, key, err)
		}
	}
	return nil, fail(op, key, errors.New("the item changed under every attempt"))
}

// Inspect implements [dlock.Backend]. A lease whose stored expiry has
// passed is reported free even while memcached still keeps its item.
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	lockKey := itemKey(b.prefix, key)
	_, v, err := b.load(ctx, key, lockKey)
	if err != nil {
		return dlock.Record{}, false, fail("inspect", key, err)
	}
	if v == nil || !v.live(time.Now()) {
		return dlock.Record{}, false, nil
	}
	return v.record(), true, nil
}
