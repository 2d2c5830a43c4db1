// Package dlocktest is the conformance suite every dlock backend must pass,
// a check of a backend with its store stopped ([CheckStoreDown]), helpers
// for tests that count a backend's wake-ups ([WatchWaits], [StartWaiters]),
// and a fault-injecting backend wrapper ([Faulty]) for tests of code that
// uses dlock.
//
// A backend's test calls [Run] with a function that returns a fresh backend
// on a real store (a new directory, a flushed database, a server started for
// the test), never a fake:
//
//	func TestConformance(t *testing.T) {
//		dlocktest.Run(t, func(t *testing.T) dlock.Backend {
//			return memlock.New()
//		})
//	}
//
// The suite drives the backend through a [dlock.Client], and calls the
// Backend methods directly where the contract itself is what is tested
// (a release with a wrong token, a refresh after expiry). Optional
// capabilities the backend does not implement ([dlock.Lister],
// [dlock.StatsReporter], [dlock.Cleaner], [dlock.Breaker]) are skipped with
// a message naming the interface.
package dlocktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// Config adapts the suite to a store's limits. The zero value suits stores
// with millisecond expiry.
type Config struct {
	// ShortTTL is the lease used where expiry is what is tested. Default
	// 150ms. A store with coarse expiry (whole seconds) sets a longer one;
	// every wait in the suite scales with it.
	ShortTTL time.Duration

	// FIFO says the backend serves waiting acquires in the order they were
	// first refused (and that every attempt respects that order), as
	// filelock on Linux, etcdlock and redislock with WithFIFO do. It adds
	// the "fifo" subtests.
	FIFO bool
}

// Run runs the whole conformance suite as subtests of t with the default
// [Config]. newBackend returns a backend on a real store; it is called once
// per subtest and may register cleanup with t.Cleanup. Each call must give
// an empty store (or a namespace of one no other call sees), since some
// subtests count records.
func Run(t *testing.T, newBackend func(t *testing.T) dlock.Backend) {
	t.Helper()
	RunConfig(t, Config{}, newBackend)
}

// RunConfig is [Run] with a [Config].
func RunConfig(t *testing.T, cfg Config, newBackend func(t *testing.T) dlock.Backend) {
	t.Helper()
	if cfg.ShortTTL <= 0 {
		cfg.ShortTTL = 150 * time.Millisecond
	}
	s := &suite{cfg: cfg, newBackend: newBackend}
	cases := s.cases()
	if cfg.FIFO {
		cases = append(cases, testCase{"fifo: waiters are granted in the order they came", testFIFOOrder})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.fn(s.setup(t)) })
	}
}

type suite struct {
	cfg        Config
	newBackend func(t *testing.T) dlock.Backend
}

type testCase struct {
	name string
	fn   func(e *env)
}

// env is what one subtest works with: a fresh backend and two clients on
// it, standing for two processes that compete for keys.
type env struct {
	t      *testing.T
	b      dlock.Backend
	c1, c2 *dlock.Client
	// short is the TTL used where expiry is tested.
	short time.Duration
	// patience bounds every wait for something that must happen, so that
	// a broken backend fails the test instead of hanging it.
	patience time.Duration
}

func (s *suite) setup(t *testing.T) *env {
	t.Helper()
	b := s.newBackend(t)
	if b == nil {
		t.Fatal("dlocktest: newBackend returned nil")
	}
	e := &env{
		t:        t,
		b:        b,
		c1:       dlock.New(b, dlock.WithLabel("dlocktest client 1")),
		c2:       dlock.New(b, dlock.WithLabel("dlocktest client 2")),
		short:    s.cfg.ShortTTL,
		patience: 20*s.cfg.ShortTTL + 2*time.Second,
	}
	// A failed subtest must not leave leases behind for the next one; the
	// test's own context is already cancelled when cleanups run.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = e.c1.ReleaseAll(ctx)
		_, _ = e.c2.ReleaseAll(ctx)
	})
	return e
}

// key returns a key unique to this subtest and call.
func (e *env) key(name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return e.t.Name() + "/" + name + "-" + hex.EncodeToString(b[:])
}

// acquire takes key with one attempt and fails the test if it is not
// granted.
func (e *env) acquire(c *dlock.Client, key string, opts ...dlock.Option) *dlock.Lock {
	e.t.Helper()
	l, err := c.TryAcquire(e.t.Context(), key, opts...)
	if err != nil {
		e.t.Fatalf("TryAcquire(%q): %v", key, err)
	}
	if l.Key() != key {
		e.t.Fatalf("TryAcquire(%q) returned a lock on %q", key, l.Key())
	}
	return l
}

// release releases l and fails the test on error.
func (e *env) release(l *dlock.Lock) {
	e.t.Helper()
	if err := l.Release(e.t.Context()); err != nil {
		e.t.Fatalf("Release(%q): %v", l.Key(), err)
	}
}

// assertHeldBy checks that the store reports key held by lock id want.
func (e *env) assertHeldBy(key, want string) {
	e.t.Helper()
	rec, found, err := e.c2.Inspect(e.t.Context(), key)
	if err != nil {
		e.t.Fatalf("Inspect(%q): %v", key, err)
	}
	if !found {
		e.t.Fatalf("Inspect(%q): free, want held by lock %s", key, want)
	}
	if rec.LockID != want {
		e.t.Fatalf("Inspect(%q): held by lock %s, want %s", key, rec.LockID, want)
	}
}

// assertFree checks that the store reports key free.
func (e *env) assertFree(key string) {
	e.t.Helper()
	rec, found, err := e.c2.Inspect(e.t.Context(), key)
	if err != nil {
		e.t.Fatalf("Inspect(%q): %v", key, err)
	}
	if found {
		e.t.Fatalf("Inspect(%q): held by lock %s, want free", key, rec.LockID)
	}
}

// assertContended checks that c cannot take key now.
func (e *env) assertContended(c *dlock.Client, key string) {
	e.t.Helper()
	l, err := c.TryAcquire(e.t.Context(), key)
	if err == nil {
		_ = l.Release(e.t.Context())
		e.t.Fatalf("TryAcquire(%q) on a held key was granted", key)
	}
	if !errors.Is(err, dlock.ErrNotAcquired) {
		e.t.Fatalf("TryAcquire(%q) on a held key: %v, want ErrNotAcquired", key, err)
	}
}

// waitDone waits for l's lost signal.
func (e *env) waitDone(l *dlock.Lock) {
	e.t.Helper()
	select {
	case <-l.Done():
	case <-time.After(e.patience):
		e.t.Fatalf("lock %q: Done did not close within %v", l.Key(), e.patience)
	}
}

// waitExpired waits until the store no longer reports key, which is what
// expiry means to the store. Polling is the point here: nothing signals an
// expiry.
func (e *env) waitExpired(key string) {
	e.t.Helper()
	deadline := time.Now().Add(e.patience)
	for {
		_, found, err := e.c2.Inspect(e.t.Context(), key)
		if err != nil {
			e.t.Fatalf("Inspect(%q): %v", key, err)
		}
		if !found {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("key %q still held %v after its TTL", key, e.patience)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sleepUntil sleeps until instant at. Used only where the passing of a TTL
// is what a test is about.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }
