package redislock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/detach"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// gate is a go-redis hook that holds acquire scripts sent on their own
// until open is closed, holds pipelines of scripts while holdPipes is set
// until pipeOpen is closed, records the size of each such pipeline and
// reports finished release scripts.
type gate struct {
	entered   chan struct{} // one per held acquire
	open      chan struct{}
	holdPipes bool // set before the backend is used
	piped     chan struct{}
	pipeOpen  chan struct{}
	released  chan struct{}

	mu        sync.Mutex
	pipelines []int
	values    []any // of ctxKey in each pipeline's context
}

// ctxKey keys a value a test puts in a caller's context.
type ctxKey struct{}

func newGate() *gate {
	return &gate{
		entered:  make(chan struct{}, 16),
		open:     make(chan struct{}),
		piped:    make(chan struct{}, 16),
		pipeOpen: make(chan struct{}),
		released: make(chan struct{}, 16),
	}
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		script := len(args) > 1 && args[0] == "evalsha"
		if script && args[1] == acquireScript.Hash() {
			g.entered <- struct{}{}
			<-g.open
		}
		err := next(ctx, cmd)
		if script && args[1] == releaseScript.Hash() {
			select {
			case g.released <- struct{}{}:
			default:
			}
		}
		return err
	}
}

func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() != "evalsha" { // a new connection's setup
			return next(ctx, cmds)
		}
		g.mu.Lock()
		g.pipelines = append(g.pipelines, len(cmds))
		g.values = append(g.values, ctx.Value(ctxKey{}))
		g.mu.Unlock()
		if g.holdPipes {
			g.piped <- struct{}{}
			<-g.pipeOpen
		}
		return next(ctx, cmds)
	}
}

func (g *gate) pipelineSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.pipelines)
}

// newGatedBackend returns a backend whose client passes through g.
func newGatedBackend(t *testing.T, g *gate) *Backend {
	t.Helper()
	rdb := newScriptedClient(t, testserver.StartRedis(t).Addr)
	rdb.AddHook(g)
	b, err := New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func acquireRequest(key string) dlock.AcquireRequest {
	token := fmt.Sprintf("token-of-%s", key)
	return dlock.AcquireRequest{Key: key, Token: token, LockID: dlock.LockID(token), TTL: time.Minute}
}

// queueReaches returns a channel closed when b's queue first holds n
// scripts. Call it before b is used.
func queueReaches(b *Backend, n int) <-chan struct{} {
	reached := make(chan struct{})
	b.batch.onQueue = func(size int) {
		if size == n {
			close(reached)
		}
	}
	return reached
}

// fillInflight starts maxInflight acquires that the gate holds in flight
// and returns once they all are; wait waits for them to return.
func fillInflight(t *testing.T, b *Backend, g *gate) (wait func()) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range maxInflight {
		wg.Go(func() {
			if _, ok, err := b.Acquire(t.Context(), acquireRequest(fmt.Sprint("held-", i))); !ok || err != nil {
				t.Errorf("held acquire %d: granted %v, %v", i, ok, err)
			}
		})
	}
	for range maxInflight {
		<-g.entered
	}
	return wg.Wait
}

// With maxInflight scripts in flight, further scripts queue and then go
// out together: one pipeline, one round trip, each caller its own reply,
// under the callers' context values (a trace span, say).
func TestBatchSharesRoundTrip(t *testing.T) {
	g := newGate()
	b := newGatedBackend(t, g)
	const queued = 5
	full := queueReaches(b, queued)
	waitHeld := fillInflight(t, b, g)

	var wg sync.WaitGroup
	fences := make([]uint64, queued)
	ctx := context.WithValue(t.Context(), ctxKey{}, "span")
	for i := range queued {
		wg.Go(func() {
			rec, ok, err := b.Acquire(ctx, acquireRequest(fmt.Sprint("queued-", i)))
			if !ok || err != nil {
				t.Errorf("queued acquire %d: granted %v, %v", i, ok, err)
			}
			fences[i] = rec.Fence
		})
	}
	<-full
	close(g.open)
	waitHeld()
	wg.Wait()

	if got := g.pipelineSizes(); !slices.Equal(got, []int{queued}) {
		t.Errorf("pipelines sent = %v, want one of %d scripts", got, queued)
	}
	if got := g.values; !slices.Equal(got, []any{"span"}) {
		t.Errorf("context values seen by the pipeline hook = %v, want [span]", got)
	}
	for i, f := range fences {
		if f != 1 {
			t.Errorf("queued acquire %d: fence %d, want 1 (its own key's first grant)", i, f)
		}
	}
	// Each caller got its own key's reply: a second acquire of each is
	// refused and names that key's holder.
	for i := range queued {
		key := fmt.Sprint("queued-", i)
		rec, ok, err := b.Acquire(t.Context(), dlock.AcquireRequest{Key: key, Token: "intruder", LockID: "intruder", TTL: time.Minute})
		if err != nil || ok || rec.LockID != acquireRequest(key).LockID {
			t.Errorf("second acquire of %q = %+v granted %v, %v; want refused, held by %s", key, rec, ok, err, acquireRequest(key).LockID)
		}
	}
}

// A caller whose context ends while its script is queued leaves the queue:
// the script is never sent.
func TestBatchCallerLeavesQueue(t *testing.T) {
	g := newGate()
	b := newGatedBackend(t, g)
	two := queueReaches(b, 2)
	waitHeld := fillInflight(t, b, g)

	ctx, cancel := context.WithCancel(t.Context())
	left := make(chan error, 1)
	go func() {
		_, _, err := b.Acquire(ctx, acquireRequest("left"))
		left <- err
	}()
	stayed := make(chan error, 1)
	go func() {
		_, ok, err := b.Acquire(t.Context(), acquireRequest("stayed"))
		if err == nil && !ok {
			err = errors.New("not granted")
		}
		stayed <- err
	}()
	<-two
	cancel()
	if err := <-left; !errors.Is(err, context.Canceled) {
		t.Errorf("queued acquire whose context ended: %v, want context.Canceled", err)
	}
	close(g.open)
	waitHeld()
	if err := <-stayed; err != nil {
		t.Errorf("the other queued acquire: %v", err)
	}
	if got := g.pipelineSizes(); !slices.Equal(got, []int{1}) {
		t.Errorf("pipelines sent = %v, want one of 1 script (the caller that left is not sent)", got)
	}
	if rec, found, err := b.Inspect(t.Context(), "left"); err != nil || found {
		t.Errorf("key of the caller that left: %+v found %v, %v; want free", rec, found, err)
	}
}

// A caller that gives up while its batch is in flight gets its context's
// error, and the grant that lands after it left is released.
func TestBatchLateGrantReleased(t *testing.T) {
	g := newGate()
	g.holdPipes = true
	b := newGatedBackend(t, g)
	one := queueReaches(b, 1)
	waitHeld := fillInflight(t, b, g)

	ctx, cancel := context.WithCancel(t.Context())
	gaveUp := make(chan error, 1)
	go func() {
		_, _, err := b.Acquire(ctx, acquireRequest("late"))
		gaveUp <- err
	}()
	<-one
	close(g.open) // the held scripts return; the queued one goes out...
	<-g.piped     // ...and is held on the way
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("acquire given up in flight: %v, want context.Canceled", err)
	}
	close(g.pipeOpen)
	waitHeld()
	<-g.released // the late grant's release finished
	if rec, found, err := b.Inspect(t.Context(), "late"); err != nil || found {
		t.Errorf("after the late grant: %+v found %v, %v; want free", rec, found, err)
	}
}

// An acquire whose caller asks again with the same token (package redlock
// marks its context with detach.KeepLate) gets no late release: it could
// take the grant of the caller's next attempt. One that cannot end before
// its reply needs none.
func TestLateReleaseSkippedWhenKept(t *testing.T) {
	b := &Backend{}
	req := acquireRequest("k")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if b.lateRelease(ctx, req) == nil {
		t.Error("no late release for a context that can end")
	}
	if b.lateRelease(detach.KeepLate(ctx), req) != nil {
		t.Error("a late release for a context marked KeepLate")
	}
	if b.lateRelease(context.Background(), req) != nil {
		t.Error("a late release for a context that cannot end")
	}
}
