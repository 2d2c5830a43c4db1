package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets: exact below 32ns, then
// 32 buckets per power of two, so a quantile is within about 3% of the true
// value. Its size is fixed whatever the number of samples, so a long run at
// 100,000 operations per second costs no more memory than a short one. The
// zero value is empty and ready to use; a Histogram is not safe for
// concurrent use (each worker keeps its own and they are merged).
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	min    uint64
	max    uint64
}

const (
	subBits     = 5
	subBuckets  = 1 << subBits
	histBuckets = (64 - subBits + 1) * subBuckets
)

// bucket returns the index of v's bucket. Values below subBuckets have a
// bucket each; above, the bucket keeps the leading subBits+1 bits.
func bucket(v uint64) int {
	if v < subBuckets {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v is in [2^k, 2^(k+1)), k >= subBits
	sub := int(v>>(k-subBits)) & (subBuckets - 1)
	return (k-subBits+1)*subBuckets + sub
}

// bucketMid returns the middle of bucket i's range, the value a quantile
// that falls in it reports.
func bucketMid(i int) uint64 {
	if i < subBuckets {
		return uint64(i)
	}
	k := i/subBuckets + subBits - 1
	sub := uint64(i % subBuckets)
	width := uint64(1) << (k - subBits)
	return (subBuckets+sub)<<(k-subBits) + width/2
}

// Record adds one sample. Negative durations (a clock that went backwards,
// which the monotonic clock should prevent) count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucket(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += float64(v)
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the average sample, 0 when there is none.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Quantile returns the sample at quantile q (0.5 for the median), to the
// bucket's precision and never beyond the recorded extremes; 0 when there
// is no sample. Quantile(1) is the exact maximum.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return time.Duration(h.max) // known exactly
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := min(max(bucketMid(i), h.min), h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}

// Summary returns the figures a report shows.
func (h *Histogram) Summary() Summary {
	return Summary{
		P50:  h.Quantile(0.50),
		P99:  h.Quantile(0.99),
		Max:  h.Max(),
		Mean: h.Mean(),
	}
}

// Summary is a latency distribution as reported: in JSON, nanoseconds.
type Summary struct {
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	Max  time.Duration `json:"max_ns"`
	Mean time.Duration `json:"mean_ns"`
}
