package dlock_test

import (
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

func TestNoRetry(t *testing.T) {
	for _, attempt := range []int{-1, 0, 1, 2, 100} {
		if d := dlock.NoRetry().NextBackoff(attempt); d != 0 {
			t.Errorf("NoRetry().NextBackoff(%d) = %v, want 0", attempt, d)
		}
	}
}

func TestLinearBackoff(t *testing.T) {
	tests := []struct {
		d, want time.Duration
	}{
		{50 * time.Millisecond, 50 * time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{time.Microsecond, time.Millisecond}, // raised to 1ms
		{0, time.Millisecond},
		{-time.Second, time.Millisecond},
	}
	for _, tt := range tests {
		s := dlock.LinearBackoff(tt.d)
		for _, attempt := range []int{0, 1, 2, 1000} {
			if got := s.NextBackoff(attempt); got != tt.want {
				t.Errorf("LinearBackoff(%v).NextBackoff(%d) = %v, want %v", tt.d, attempt, got, tt.want)
			}
		}
	}
}

func TestExponentialBackoff(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi time.Duration
		// caps[i] is the upper bound of attempt i+1; each sleep lies in
		// [cap/2, cap].
		caps []time.Duration
	}{
		{"doubles up to hi", 10 * time.Millisecond, 100 * time.Millisecond, []time.Duration{
			10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond,
			80 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
		}},
		{"lo raised to 1ms", 0, 4 * time.Millisecond, []time.Duration{
			time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 4 * time.Millisecond,
		}},
		{"hi raised to lo", 50 * time.Millisecond, time.Millisecond, []time.Duration{
			50 * time.Millisecond, 50 * time.Millisecond,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dlock.ExponentialBackoff(tt.lo, tt.hi)
			for i, limit := range tt.caps {
				attempt := i + 1
				lo, hi := limit, time.Duration(0)
				for range 200 {
					d := s.NextBackoff(attempt)
					lo, hi = min(lo, d), max(hi, d)
				}
				if lo < limit/2 || hi > limit {
					t.Errorf("attempt %d: sleeps in [%v, %v], want within [%v, %v]", attempt, lo, hi, limit/2, limit)
				}
				// Full jitter: 200 draws from a range this wide are not
				// all equal.
				if lo == hi {
					t.Errorf("attempt %d: every sleep was %v; no jitter", attempt, lo)
				}
			}
		})
	}
	// Attempts far past the cap, and nonsense attempts, stay in bounds
	// without overflowing or panicking.
	s := dlock.ExponentialBackoff(time.Millisecond, time.Second)
	for _, attempt := range []int{-5, 0, 61, 62, 63, 64, 1 << 30} {
		d := s.NextBackoff(attempt)
		if d < time.Millisecond/2 || d > time.Second {
			t.Errorf("NextBackoff(%d) = %v, want within [0.5ms, 1s]", attempt, d)
		}
	}
	if d := s.NextBackoff(1 << 30); d < time.Second/2 {
		t.Errorf("NextBackoff(1<<30) = %v, want at least hi/2", d)
	}
}

func TestLimitRetry(t *testing.T) {
	s := dlock.LimitRetry(dlock.LinearBackoff(5*time.Millisecond), 3)
	for attempt, want := range map[int]time.Duration{
		1: 5 * time.Millisecond, 2: 5 * time.Millisecond, 3: 5 * time.Millisecond,
		4: 0, 5: 0, 100: 0,
	} {
		if got := s.NextBackoff(attempt); got != want {
			t.Errorf("NextBackoff(%d) = %v, want %v", attempt, got, want)
		}
	}
	if got := dlock.LimitRetry(dlock.LinearBackoff(time.Second), 0).NextBackoff(1); got != 0 {
		t.Errorf("LimitRetry(s, 0).NextBackoff(1) = %v, want 0", got)
	}
	// LimitRetry passes the attempt through to the strategy it limits.
	var seen []int
	s = dlock.LimitRetry(dlock.RetryFunc(func(a int) time.Duration { seen = append(seen, a); return time.Duration(a) }), 2)
	if s.NextBackoff(1) != 1 || s.NextBackoff(2) != 2 || s.NextBackoff(3) != 0 || len(seen) != 2 {
		t.Errorf("LimitRetry called the inner strategy with %v, want [1 2]", seen)
	}
}

func TestDefaultRetry(t *testing.T) {
	s := dlock.DefaultRetry()
	if d := s.NextBackoff(1); d <= 0 || d > time.Millisecond {
		t.Errorf("DefaultRetry first sleep = %v, want within (0, 1ms]", d)
	}
	if d := s.NextBackoff(50); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("DefaultRetry late sleep = %v, want within [50ms, 100ms]", d)
	}
}
