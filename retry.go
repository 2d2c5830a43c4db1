package dlock

import (
	"math/rand/v2"
	"time"
)

// RetryStrategy decides how long a waiting Acquire sleeps between attempts
// when the backend cannot notify waiters. It must be safe for concurrent use;
// attempt counts failed attempts from 1. A return of 0 stops waiting.
type RetryStrategy interface {
	NextBackoff(attempt int) time.Duration
}

// RetryFunc adapts a function to [RetryStrategy].
type RetryFunc func(attempt int) time.Duration

// NextBackoff calls f.
func (f RetryFunc) NextBackoff(attempt int) time.Duration { return f(attempt) }

// NoRetry never retries: Acquire makes one attempt.
func NoRetry() RetryStrategy { return RetryFunc(func(int) time.Duration { return 0 }) }

// LinearBackoff retries every d. A d below 1ms is raised to 1ms.
func LinearBackoff(d time.Duration) RetryStrategy {
	d = max(d, time.Millisecond)
	return RetryFunc(func(int) time.Duration { return d })
}

// ExponentialBackoff doubles the sleep from lo up to hi, with "equal jitter":
// each sleep is drawn uniformly from [cap/2, cap], so waiters that failed
// together do not retry together. lo below 1ms is raised to 1ms; hi below lo
// is raised to lo.
func ExponentialBackoff(lo, hi time.Duration) RetryStrategy {
	lo = max(lo, time.Millisecond)
	hi = max(hi, lo)
	return RetryFunc(func(attempt int) time.Duration {
		// Attempts count from 1; a caller's 0 or negative must not become
		// a negative shift, which panics.
		attempt = max(attempt, 1)
		d := hi
		if attempt < 62 && lo<<(attempt-1) < hi && lo<<(attempt-1) > 0 {
			d = lo << (attempt - 1)
		}
		return d/2 + rand.N(d/2+1)
	})
}

// LimitRetry stops s after n retries.
func LimitRetry(s RetryStrategy, n int) RetryStrategy {
	return RetryFunc(func(attempt int) time.Duration {
		if attempt > n {
			return 0
		}
		return s.NextBackoff(attempt)
	})
}

// DefaultRetry is used when no strategy is set: exponential from 1ms to
// 100ms with jitter, each sleep also cut short at the holder's expiry.
func DefaultRetry() RetryStrategy { return ExponentialBackoff(time.Millisecond, 100*time.Millisecond) }
