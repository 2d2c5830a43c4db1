package bench

import (
	"context"
	"time"
)

// Floor is the raw cost of the store under a backend, measured without
// dlock: what one acquire+release pair cannot go below with this store.
type Floor struct {
	Name           string        `json:"name"`
	Detail         string        `json:"detail"` // what one pair does
	Elapsed        time.Duration `json:"elapsed_ns"`
	Pairs          uint64        `json:"pairs"`
	PairsPerSecond float64       `json:"pairs_per_second"`
	Latency        Summary       `json:"latency"` // per pair
}

// MeasureFloor calls pair repeatedly for d (or until ctx is done or pair
// fails) and summarises it.
func MeasureFloor(ctx context.Context, name, detail string, d time.Duration, pair func() error) (Floor, error) {
	var h Histogram
	begin := time.Now()
	deadline := begin.Add(d)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(deadline) {
			break
		}
		if err := pair(); err != nil {
			return Floor{}, err
		}
		h.Record(time.Since(t0))
	}
	if err := ctx.Err(); err != nil {
		return Floor{}, err
	}
	elapsed := time.Since(begin)
	return Floor{
		Name:           name,
		Detail:         detail,
		Elapsed:        elapsed,
		Pairs:          h.Count(),
		PairsPerSecond: float64(h.Count()) / elapsed.Seconds(),
		Latency:        h.Summary(),
	}, nil
}
