package dlock_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/memlock"
)

// bareBackend hides every optional interface of its backend, Notifier
// among them: waiters poll it.
type bareBackend struct{ dlock.Backend }

// countingRetry backs off for an hour and counts the backoffs asked for.
type countingRetry struct{ asked atomic.Int32 }

func (r *countingRetry) NextBackoff(int) time.Duration {
	r.asked.Add(1)
	return time.Hour
}

// A waiter on a backend that cannot notify polls with its retry strategy's
// backoff, here an hour, and the holder's lease lasts a minute: only the
// release by another goroutine of the same Client can wake it within its
// wait of 30 s, and does, for each way the Client frees a key.
func TestLocalReleaseWakesPollingWaiter(t *testing.T) {
	frees := map[string]func(c *dlock.Client, l *dlock.Lock) error{
		"Release": func(_ *dlock.Client, l *dlock.Lock) error { return l.Release(t.Context()) },
		"ReleaseToken": func(c *dlock.Client, l *dlock.Lock) error {
			_, err := c.ReleaseToken(t.Context(), l.Key(), l.Token(), time.Time{})
			return err
		},
	}
	for name, free := range frees {
		t.Run(name, func(t *testing.T) {
			retry := &countingRetry{}
			c := dlock.New(bareBackend{memlock.New()}, dlock.WithTTL(time.Minute), dlock.WithRetry(retry))
			holder, err := c.TryAcquire(t.Context(), "k")
			if err != nil {
				t.Fatal(err)
			}
			refused := make(chan struct{})
			granted := make(chan error, 1)
			go func() {
				l, err := c.Acquire(t.Context(), "k", dlock.WithMaxWait(30*time.Second),
					dlock.WithOnWait(func(dlock.Record) { close(refused) }))
				if err == nil {
					err = l.Release(t.Context())
				}
				granted <- err
			}()
			<-refused
			if err := free(c, holder); err != nil {
				t.Fatal(err)
			}
			if err := <-granted; err != nil {
				t.Fatalf("waiter after the release: %v", err)
			}
			if n := retry.asked.Load(); n != 1 {
				t.Errorf("the waiter asked its retry strategy %d times, want 1 (one sleep, cut short)", n)
			}
		})
	}
}
