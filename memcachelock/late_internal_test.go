package memcachelock

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// gatedConn holds each write that starts with prefix until open is
// closed, as a slow network would, after telling entered.
type gatedConn struct {
	net.Conn
	prefix  []byte
	entered chan<- struct{}
	open    <-chan struct{}
}

func (c gatedConn) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, c.prefix) {
		select {
		case c.entered <- struct{}{}:
		default:
		}
		<-c.open
	}
	return c.Conn.Write(p)
}

// An acquire whose caller left (its context ended) before the write
// reached the server: the caller gives the token back at once, as the
// core does, finding nothing, and the write lands afterwards. The backend undoes that write
// when it lands, so the key is not held by nobody until its TTL.
func TestAcquireThatLandsLateIsUndone(t *testing.T) {
	srv := testserver.Memcached(t)
	b, err := New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	entered, open := make(chan struct{}, 1), make(chan struct{})
	b.mc.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return gatedConn{Conn: conn, prefix: []byte("add "), entered: entered, open: open}, nil
	}
	const key, token = "k", "00112233445566778899aabbccddeeff"

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := b.Acquire(ctx, dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Hour})
		if err != nil {
			// As the core does with an acquire that failed in flight.
			_ = b.Release(context.WithoutCancel(ctx), key, token)
		}
		done <- err
	}()
	<-entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire given up before its write = %v, want context.Canceled", err)
	}
	close(open)                                  // the write lands now
	if err := b.Drain(t.Context()); err != nil { // waits for it and what follows it
		t.Fatal(err)
	}
	if rec, found, err := b.Inspect(t.Context(), key); err != nil || found {
		t.Fatalf("after an acquire that landed late, Inspect = %+v, found %v, %v; want a free key", rec, found, err)
	}
	// It did land (before Drain returned), and was released: the item is
	// a released record, which keeps the grant's fence.
	_, v, err := b.load(t.Context(), key, itemKey(b.prefix, key))
	if err != nil || v == nil || !v.Released || v.Fence == 0 {
		t.Fatalf("item after Close = %+v, %v; want the late grant, released", v, err)
	}
}
