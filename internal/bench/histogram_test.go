package bench

import (
	"math"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != 1000 {
		t.Fatalf("Count = %d, want 1000", h.Count())
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{0.01, 10 * time.Microsecond},
		{1, 1000 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 0.035 {
			t.Errorf("Quantile(%v) = %v, want %v within 3.5%%", tc.q, got, tc.want)
		}
	}
	if h.Max() != time.Millisecond {
		t.Errorf("Max = %v, want exactly 1ms", h.Max())
	}
	if want := 500500 * time.Nanosecond; h.Mean() != want {
		t.Errorf("Mean = %v, want %v", h.Mean(), want)
	}
}

func TestHistogramSmallAndEdgeValues(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5) // counts as 0
	h.Record(7)
	h.Record(time.Duration(math.MaxInt64))
	if got := h.Quantile(0); got != 0 {
		t.Errorf("Quantile(0) = %v, want 0", got)
	}
	if got := h.Quantile(0.5); got != 7 {
		t.Errorf("Quantile(0.5) = %v, want 7ns (exact below 32ns)", got)
	}
	if got := h.Quantile(1); got != time.Duration(math.MaxInt64) {
		t.Errorf("Quantile(1) = %v, want the max", got)
	}
}

func TestHistogramBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for v := uint64(0); v < 1<<20; v = v*9/8 + 1 {
		b := bucket(v)
		if b < prev {
			t.Fatalf("bucket(%d) = %d < bucket of a smaller value %d", v, b, prev)
		}
		if mid := bucketMid(b); float64(mid) < float64(v)*0.96 || float64(mid) > float64(v)*1.04+1 {
			t.Fatalf("bucketMid(bucket(%d)) = %d, more than 4%% off", v, mid)
		}
		prev = b
	}
	if b := bucket(math.MaxUint64); b >= histBuckets {
		t.Fatalf("bucket(MaxUint64) = %d, out of %d", b, histBuckets)
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := 1; i <= 100; i++ {
		d := time.Duration(i) * time.Millisecond
		all.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	var empty Histogram
	a.Merge(&empty)
	a.Merge(&b)
	if a.Summary() != all.Summary() || a.Count() != all.Count() {
		t.Fatalf("merged %+v, want %+v", a.Summary(), all.Summary())
	}
}
