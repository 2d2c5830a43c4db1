package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// overtake is a go-redis hook that makes the caller's cleanup land before
// its acquire: when armed, it releases the acquire's token on another
// connection, then sends the acquire, then reports the call as failed
// (the reply was lost).
type overtake struct {
	b     *Backend // the releasing side: another client on the same server
	armed atomic.Bool
	reply chan any // the acquire's real reply
}

func (h *overtake) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *overtake) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *overtake) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || args[1] != acquireScript.Hash() || !h.armed.CompareAndSwap(true, false) {
			return next(ctx, cmd)
		}
		// evalsha sha numkeys key1..keyN token ...
		numkeys, _ := strconv.Atoi(fmt.Sprint(args[2]))
		key := args[3].(string)[len(h.b.prefix):]
		token := args[3+numkeys].(string)
		if err := h.b.Release(ctx, key, token); !errors.Is(err, dlock.ErrNotHeld) {
			return errors.New("overtaking release: " + errString(err))
		}
		err := next(ctx, cmd)
		v, _ := cmd.(*redis.Cmd).Result()
		h.reply <- v
		if err != nil {
			return err
		}
		return errors.New("read tcp: connection reset by peer")
	}
}

// newScriptedClient returns a client of the server at addr with the
// backend's scripts loaded, so that they run by SHA at the first try and a
// hook sees each run once.
func newScriptedClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	for _, s := range allScripts {
		if err := s.Load(t.Context(), rdb).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return rdb
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestReleaseOvertakesAcquire: a caller gives up on an acquire whose reply
// was lost, and its cleanup release reaches the server before the acquire
// does (another connection). The late acquire must not take the key.
func TestReleaseOvertakesAcquire(t *testing.T) {
	srv := testserver.StartRedis(t)
	other, err := New(newScriptedClient(t, srv.Addr))
	if err != nil {
		t.Fatal(err)
	}
	rdb := newScriptedClient(t, srv.Addr)
	hook := &overtake{b: other, reply: make(chan any, 1)}
	rdb.AddHook(hook)
	b, err := New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(); _ = other.Close() })
	c := dlock.New(b)
	key := "overtaken"

	hook.armed.Store(true)
	if l, err := c.TryAcquire(t.Context(), key, dlock.WithTTL(time.Minute)); !errors.Is(err, dlock.ErrUnavailable) {
		t.Fatalf("TryAcquire with a lost reply = %v, %v; want ErrUnavailable", l, err)
	}
	r, err := parseReply(<-hook.reply, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.state != stateVoid {
		t.Errorf("late acquire reply state = %d, want %d (refused: token already released)", r.state, stateVoid)
	}
	if rec, found, err := c.Inspect(t.Context(), key); err != nil || found {
		t.Fatalf("after the late acquire, Inspect = %+v found %v, %v; want free", rec, found, err)
	}
	l, err := c.TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatalf("a fresh token: %v", err)
	}
	if l.Fence() != 1 {
		t.Errorf("fence = %d, want 1: the refused acquire must not have drawn one", l.Fence())
	}
	_ = l.Release(t.Context())
}
