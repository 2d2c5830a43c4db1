package pglock_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

// TestFenceGrowsUnderContention: 8 clients take one key 100 times each,
// each waiting for the others, and every holder's fence is above the one
// before it. Under contention a grant can be decided while another
// attempt has already drawn its fence: this catches a fence drawn before
// the key's grants are serialized.
func TestFenceGrowsUnderContention(t *testing.T) {
	const workers, rounds = 8, 100
	pool := newPool(t, startPostgres(t))
	b := newBackend(t, pool)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var (
		mu     sync.Mutex
		last   uint64
		inside bool
		bad    []string
	)
	var wg sync.WaitGroup
	for w := range workers {
		c := dlock.New(b, dlock.WithTTL(time.Minute))
		wg.Go(func() {
			for range rounds {
				l, err := c.Acquire(ctx, "shared")
				if err != nil {
					t.Errorf("worker %d: %v", w, err)
					return
				}
				mu.Lock()
				if inside {
					bad = append(bad, "two holders at once")
				}
				if l.Fence() <= last {
					bad = append(bad, fmt.Sprintf("fence went from %d to %d", last, l.Fence()))
				}
				inside, last = true, l.Fence()
				mu.Unlock()

				mu.Lock()
				inside = false
				mu.Unlock()
				if err := l.Release(ctx); err != nil {
					t.Errorf("worker %d: release: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d faults in %d grants, first: %s", len(bad), workers*rounds, bad[0])
	}
}
