package dlock

import (
	"context"
	"time"

	"github.com/dlock-dev/dlock/internal/detach"
)

// maxRetrying bounds the releases a client makes again at one time (see
// releaseLater), so that a store that hangs while a busy program releases
// does not gather a goroutine per release; past it, a lease waits for its
// TTL.
const maxRetrying = 64

// unconfirmed reports whether a release's error leaves unknown whether it
// was made, so that it is worth making again (see detach.Unconfirmed).
func unconfirmed(err error) bool { return detach.Unconfirmed(err, ErrUnavailable, ErrClosed) }

// abandon releases a token whose acquire outcome is unknown. It ignores the
// caller's cancellation, since the caller is the one who gave up. It waits
// at most abandonWait for the first attempt, so that a hung store cannot
// hold the caller far past its own deadline; the rest of that attempt goes
// on in the background, and [Client.Drain] waits for it. If it is not
// confirmed, it is made again (see releaseLater). expiry is when a grant of
// the token would have run out at the latest.
func (c *Client) abandon(ctx context.Context, key, token string, expiry time.Time) {
	ctx = context.WithoutCancel(ctx)
	first := make(chan struct{})
	c.cleanups.Go(func() {
		err := c.releaseOnce(ctx, key, token)
		close(first)
		if unconfirmed(err) {
			c.releaseLater(ctx, key, token, expiry)
		}
	})
	t := time.NewTimer(abandonWait)
	defer t.Stop()
	select {
	case <-first:
	case <-t.C:
	}
}

// releaseLater makes the release of token again, on a goroutine of its
// own, with backoff, while the store neither confirms nor refuses it,
// until expiry (plus the drift margin, since the store's clock may run
// slow) or detach.RetryFor. Without it, one lost call (a stalled store, a
// full connection pool) left the key held by nobody for the rest of its
// TTL. [Client.Drain] does not wait for it: a program about to exit should
// not be held for a minute by a store that hangs.
func (c *Client) releaseLater(ctx context.Context, key, token string, expiry time.Time) {
	if c.retrying.Add(1) > maxRetrying {
		c.retrying.Add(-1)
		return
	}
	ctx = context.WithoutCancel(ctx)
	ttl := max(time.Until(expiry), 0)
	stop := time.Now().Add(min(ttl+drift(ttl), detach.RetryFor))
	go func() {
		defer c.retrying.Add(-1)
		detach.Retry(ctx, stop, func() bool { return unconfirmed(c.releaseOnce(ctx, key, token)) })
	}()
}

// releaseOnce makes one release, bounded by cleanupTimeout.
func (c *Client) releaseOnce(ctx context.Context, key, token string) error {
	ctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	err := c.backend.Release(ctx, key, token)
	if err == nil {
		c.local.wake(key)
	}
	return err
}
