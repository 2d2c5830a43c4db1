package redislock_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/redislock"
)

// Run against a local redis-server started by the benchmark:
//
//	go test -run '^$' -bench . -benchtime 3s ./redislock/

// BenchmarkAcquireRelease measures uncontended acquire+release pairs (two
// round trips each) with 1 and 16 workers on distinct keys.
func BenchmarkAcquireRelease(b *testing.B) {
	srv := startRedis(b)
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			c := dlock.New(newBackend(b, newClient(b, srv.Addr), redislock.WithPrefix(uniquePrefix())))
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range workers {
				wg.Go(func() {
					key := fmt.Sprintf("key-%d", w)
					for next.Add(1) <= int64(b.N) {
						l, err := c.TryAcquire(ctx, key)
						if err != nil {
							b.Error(err)
							return
						}
						if err := l.Release(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pairs/s")
		})
	}
}

// BenchmarkContended has 16 workers take one key in turn (Acquire, which
// waits, then Release at once) and reports grants/s, the wait for each
// grant (p50, p99, max), fairness (fewest and most grants per worker) and
// script calls the server ran per grant, with and without FIFO.
func BenchmarkContended(b *testing.B) {
	srv := startRedis(b)
	stats := newClient(b, srv.Addr)
	for _, fifo := range []bool{false, true} {
		b.Run(fmt.Sprintf("fifo=%v", fifo), func(b *testing.B) {
			const workers = 16
			be := newBackend(b, newClient(b, srv.Addr), redislock.WithPrefix(uniquePrefix()), redislock.WithFIFO(fifo))
			c := dlock.New(be, dlock.WithTTL(10*time.Second))
			ctx := context.Background()
			var (
				next   atomic.Int64
				wg     sync.WaitGroup
				mu     sync.Mutex
				waits  = make([]time.Duration, 0, b.N)
				grants [workers]int
			)
			before := scriptCalls(commandCalls(b, stats))
			b.ResetTimer()
			start := time.Now()
			for w := range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						l, err := c.Acquire(ctx, "contended")
						if err != nil {
							b.Error(err)
							return
						}
						wait := time.Since(t0)
						if err := l.Release(ctx); err != nil {
							b.Error(err)
							return
						}
						mu.Lock()
						waits = append(waits, wait)
						grants[w]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			calls := scriptCalls(commandCalls(b, stats)) - before
			slices.Sort(waits)
			pct := func(p float64) float64 {
				return float64(waits[min(int(p*float64(len(waits))), len(waits)-1)].Microseconds()) / 1000
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "grants/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(waits[len(waits)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(float64(slices.Min(grants[:])), "min-grants")
			b.ReportMetric(float64(slices.Max(grants[:])), "max-grants")
			b.ReportMetric(float64(calls)/float64(b.N), "scripts/grant")
		})
	}
}
