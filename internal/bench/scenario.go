package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names a workload.
type Scenario string

// The scenarios. Serial and Parallel measure uncontended acquire+release
// pairs (one attempt each, which must succeed); Contended measures waiting
// for one key.
const (
	Serial    Scenario = "serial"    // one worker, one key: pairs/s and latency per pair
	Parallel  Scenario = "parallel"  // N workers, a key each: pairs/s
	Contended Scenario = "contended" // N workers, one key, a short critical section
)

// ErrBusy reports that a key of an uncontended scenario was held by someone
// else, which only another run (or a crashed one, until its leases expire)
// on the same store and prefix explains.
var ErrBusy = errors.New("bench: key held by someone else")

// Scenarios lists every scenario in the order reports show them.
var Scenarios = []Scenario{Serial, Parallel, Contended}

// Defaults of [Config], chosen so that a first `dlock bench` finishes in a
// few seconds.
const (
	DefaultWorkers  = 4
	DefaultDuration = 2 * time.Second
	DefaultHold     = 100 * time.Microsecond
	DefaultPrefix   = "dlock-bench/"
)

// Config tunes a run. The zero value is usable: each zero field takes its
// default.
type Config struct {
	// Workers is the number of goroutines in Parallel and Contended
	// (Serial has one). Default DefaultWorkers.
	Workers int
	// Duration is how long a scenario runs. Default DefaultDuration.
	// Ignored when Ops is set.
	Duration time.Duration
	// Ops, when positive, makes the scenario stop after exactly this many
	// pairs (Serial, Parallel) or grants (Contended) instead of after
	// Duration: the b.N of a Go benchmark.
	Ops int
	// Hold is how long a Contended worker stays in its critical section.
	// Default DefaultHold; a negative value means no pause at all. See
	// [hold] for how it is spent.
	Hold time.Duration
	// Prefix starts every key the scenarios use. Default DefaultPrefix.
	Prefix string

	// critical, if set, replaces the Hold pause: tests use it to hold
	// workers inside the critical section until they choose.
	critical func(worker int)
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.Duration <= 0 {
		c.Duration = DefaultDuration
	}
	if c.Hold == 0 {
		c.Hold = DefaultHold
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	return c
}

// Locker is one lock implementation as one worker uses it. Implementations
// adapt dlock and the peer libraries to the scenarios.
type Locker interface {
	// TryLock makes one attempt to take key. ok is false, with a nil
	// error, when someone else holds it.
	TryLock(ctx context.Context, key string) (h Held, ok bool, err error)
	// Lock waits until key is granted, returning an error once ctx is
	// done.
	Lock(ctx context.Context, key string) (Held, error)
}

// Drainer is a Locker that may leave work running in the background when a
// wait is cut short (dlock gives back an acquire whose outcome it did not
// learn). A scenario waits for it before it ends, so that the next one, or
// the next run on the same store, finds the key free.
type Drainer interface {
	Drain(ctx context.Context) error
}

// Held is a granted lock.
type Held interface {
	// Fence returns the grant's fencing number, or 0 if the implementation
	// has none.
	Fence() uint64
	// Unlock releases the lock.
	Unlock(ctx context.Context) error
}

// Subject is a lock implementation under test: how to build each worker's
// Locker and, optionally, how to count the store operations it causes.
type Subject struct {
	// Name labels the subject in reports ("dlock", "redsync", ...).
	Name string
	// NewLocker returns the Locker worker i (from 0) uses. It is called
	// for every worker before timing starts.
	NewLocker func(worker int) (Locker, error)
	// Counters are read before and after each scenario; reports show the
	// difference per pair or grant.
	Counters []Counter
}

// Counter is a running count of something a subject does, such as backend
// calls or commands the server processed.
type Counter struct {
	Name string
	Read func(ctx context.Context) (uint64, error)
}

// Result is one scenario's outcome. In JSON durations are nanoseconds.
type Result struct {
	Group    string        `json:"group,omitempty"` // store family, for comparisons ("redis", "file")
	Subject  string        `json:"subject"`
	Scenario Scenario      `json:"scenario"`
	Workers  int           `json:"workers"`
	Hold     time.Duration `json:"hold_ns,omitempty"` // Contended only
	Elapsed  time.Duration `json:"elapsed_ns"`
	// Ops counts acquire+release pairs (Serial, Parallel) or grants
	// (Contended).
	Ops       uint64  `json:"ops"`
	PerSecond float64 `json:"ops_per_second"`
	// Latency is per pair in Serial and Parallel; in Contended it is the
	// wait, from calling Lock to the grant. Max includes waits still
	// pending when the run ended.
	Latency Summary `json:"latency"`

	// Contended only.
	MinGrants  uint64  `json:"min_grants,omitempty"`
	MaxGrants  uint64  `json:"max_grants,omitempty"`
	Fairness   float64 `json:"fairness,omitempty"` // MinGrants / MaxGrants
	Violations uint64  `json:"violations"`         // grants while another worker was inside
	// FenceRegressions counts grants whose fence was not above the
	// previous grant's (only for subjects with fences).
	FenceRegressions uint64 `json:"fence_regressions"`

	// PerOp is each counter's increase divided by Ops.
	PerOp map[string]float64 `json:"per_op,omitempty"`
}

// Run runs scenario sc of subject s.
func Run(ctx context.Context, sc Scenario, s Subject, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	switch sc {
	case Serial:
		return pairs(ctx, sc, s, cfg, 1, func(int) string { return cfg.Prefix + "serial" })
	case Parallel:
		return pairs(ctx, sc, s, cfg, cfg.Workers, func(i int) string {
			return cfg.Prefix + "parallel/" + strconv.Itoa(i)
		})
	case Contended:
		return contended(ctx, s, cfg)
	}
	return Result{}, fmt.Errorf("bench: unknown scenario %q", sc)
}

// run is the shared machinery of a timed run: the stop signal (Duration
// passed, Ops used up, ctx done or a worker failed), the first error and
// the counters.
type run struct {
	stopped atomic.Bool
	tickets atomic.Int64 // when counting: operations left to hand out
	counted bool
	ctx     context.Context // cancelled on stop, to end waits
	stop    context.CancelFunc

	mu  sync.Mutex
	err error
}

func newRun(ctx context.Context, cfg Config) *run {
	r := &run{counted: cfg.Ops > 0}
	r.tickets.Store(int64(cfg.Ops))
	r.ctx, r.stop = context.WithCancel(ctx)
	return r
}

// start arms the timer of a Duration run; it returns when to stop it.
func (r *run) start(cfg Config) func() {
	stopOnDone := context.AfterFunc(r.ctx, func() { r.stopped.Store(true) })
	if r.counted {
		return func() { stopOnDone() }
	}
	t := time.AfterFunc(cfg.Duration, r.halt)
	return func() { t.Stop(); stopOnDone() }
}

func (r *run) halt() {
	r.stopped.Store(true)
	r.stop()
}

// next reports whether a worker should do one more operation.
func (r *run) next() bool {
	if r.stopped.Load() {
		return false
	}
	if r.counted && r.tickets.Add(-1) < 0 {
		r.stopped.Store(true)
		return false
	}
	return true
}

func (r *run) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.halt()
}

func (r *run) firstErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// lockers builds the workers' Lockers before timing starts.
func lockers(s Subject, n int) ([]Locker, error) {
	ls := make([]Locker, n)
	for i := range ls {
		l, err := s.NewLocker(i)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: worker %d: %w", s.Name, i, err)
		}
		ls[i] = l
	}
	return ls, nil
}

// drain waits for what the lockers still run in the background.
func drain(ctx context.Context, ls []Locker) error {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	for _, l := range ls {
		if d, ok := l.(Drainer); ok {
			if err := d.Drain(ctx); err != nil {
				return fmt.Errorf("releases still in flight after %v: %w", releaseTimeout, err)
			}
		}
	}
	return nil
}

func readCounters(ctx context.Context, s Subject) ([]uint64, error) {
	vs := make([]uint64, len(s.Counters))
	for i, c := range s.Counters {
		v, err := c.Read(ctx)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: read %s: %w", s.Name, c.Name, err)
		}
		vs[i] = v
	}
	return vs, nil
}

func perOp(s Subject, before, after []uint64, ops uint64) map[string]float64 {
	if len(s.Counters) == 0 || ops == 0 {
		return nil
	}
	m := make(map[string]float64, len(s.Counters))
	for i, c := range s.Counters {
		m[c.Name] = float64(after[i]-before[i]) / float64(ops)
	}
	return m
}

// releaseTimeout bounds an Unlock made after the run was stopped.
const releaseTimeout = 10 * time.Second

// pairs runs workers goroutines, each taking and releasing its own key in a
// loop with one attempt per acquire.
func pairs(ctx context.Context, sc Scenario, s Subject, cfg Config, workers int, key func(int) string) (Result, error) {
	ls, err := lockers(s, workers)
	if err != nil {
		return Result{}, err
	}
	before, err := readCounters(ctx, s)
	if err != nil {
		return Result{}, err
	}
	r := newRun(ctx, cfg)
	defer r.stop()
	hists := make([]Histogram, workers)
	// Releases use a context of their own so that a stop does not leave a
	// key held in the store.
	relCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	begin := time.Now()
	stopTimer := r.start(cfg)
	for i := range workers {
		wg.Go(func() {
			k, h := key(i), &hists[i]
			for r.next() {
				t0 := time.Now()
				// The caller's ctx, not r.ctx: a pair under way when the
				// time is up completes rather than failing.
				held, ok, err := ls[i].TryLock(ctx, k)
				if err != nil {
					r.fail(fmt.Errorf("bench: %s %s: lock %q: %w", s.Name, sc, k, err))
					return
				}
				if !ok {
					r.fail(fmt.Errorf("%w: %s %s: %q (is another benchmark running on this store?)", ErrBusy, s.Name, sc, k))
					return
				}
				if err := held.Unlock(relCtx); err != nil {
					r.fail(fmt.Errorf("bench: %s %s: unlock %q: %w", s.Name, sc, k, err))
					return
				}
				h.Record(time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	stopTimer()
	if err := r.firstErr(); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bench: %s %s: %w", s.Name, sc, err)
	}
	var all Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	after, err := readCounters(ctx, s)
	if err != nil {
		return Result{}, err
	}
	return Result{
		Subject:   s.Name,
		Scenario:  sc,
		Workers:   workers,
		Elapsed:   elapsed,
		Ops:       all.Count(),
		PerSecond: float64(all.Count()) / elapsed.Seconds(),
		Latency:   all.Summary(),
		PerOp:     perOp(s, before, after, all.Count()),
	}, nil
}

// contended runs cfg.Workers goroutines that all wait for one key, hold it
// for cfg.Hold and release it, checking that no two are inside at once.
func contended(ctx context.Context, s Subject, cfg Config) (Result, error) {
	ls, err := lockers(s, cfg.Workers)
	if err != nil {
		return Result{}, err
	}
	before, err := readCounters(ctx, s)
	if err != nil {
		return Result{}, err
	}
	key := cfg.Prefix + "contended"
	r := newRun(ctx, cfg)
	defer r.stop()
	var (
		inside      atomic.Int32  // workers in the critical section now
		violations  atomic.Uint64 // grants that found someone inside
		lastFence   atomic.Uint64
		regressions atomic.Uint64
		pending     = make([]time.Duration, cfg.Workers) // wait cut short by the stop
		grants      = make([]uint64, cfg.Workers)
		hists       = make([]Histogram, cfg.Workers)
	)
	relCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	begin := time.Now()
	stopTimer := r.start(cfg)
	for i := range cfg.Workers {
		wg.Go(func() {
			for r.next() {
				t0 := time.Now()
				held, err := ls[i].Lock(r.ctx, key)
				if err != nil {
					if r.ctx.Err() != nil {
						pending[i] = time.Since(t0) // the run ended while waiting
						return
					}
					r.fail(fmt.Errorf("bench: %s contended: lock %q: %w", s.Name, key, err))
					return
				}
				wait := time.Since(t0)
				if inside.Add(1) != 1 {
					violations.Add(1)
				}
				if f := held.Fence(); f != 0 {
					if prev := lastFence.Swap(f); f <= prev {
						regressions.Add(1)
					}
				}
				switch {
				case cfg.critical != nil:
					cfg.critical(i)
				case cfg.Hold > 0:
					hold(cfg.Hold)
				}
				inside.Add(-1)
				unlockCtx, cancel := context.WithTimeout(relCtx, releaseTimeout)
				err = held.Unlock(unlockCtx)
				cancel()
				if err != nil {
					r.fail(fmt.Errorf("bench: %s contended: unlock %q: %w", s.Name, key, err))
					return
				}
				grants[i]++
				hists[i].Record(wait)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	stopTimer()
	if err := r.firstErr(); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("bench: %s contended: %w", s.Name, err)
	}
	var all Histogram
	for i := range hists {
		all.Merge(&hists[i])
	}
	after, err := readCounters(ctx, s)
	if err != nil {
		return Result{}, err
	}
	if err := drain(relCtx, ls); err != nil {
		return Result{}, fmt.Errorf("bench: %s contended: %w", s.Name, err)
	}
	res := Result{
		Subject:          s.Name,
		Scenario:         Contended,
		Workers:          cfg.Workers,
		Hold:             max(cfg.Hold, 0),
		Elapsed:          elapsed,
		Ops:              all.Count(),
		PerSecond:        float64(all.Count()) / elapsed.Seconds(),
		Latency:          all.Summary(),
		Violations:       violations.Load(),
		FenceRegressions: regressions.Load(),
		PerOp:            perOp(s, before, after, all.Count()),
	}
	for _, p := range pending {
		res.Latency.Max = max(res.Latency.Max, p)
	}
	res.MinGrants, res.MaxGrants = grants[0], grants[0]
	for _, g := range grants[1:] {
		res.MinGrants = min(res.MinGrants, g)
		res.MaxGrants = max(res.MaxGrants, g)
	}
	if res.MaxGrants > 0 {
		res.Fairness = float64(res.MinGrants) / float64(res.MaxGrants)
	}
	return res, nil
}

// hold spends d inside the critical section. Below a millisecond it spins,
// yielding the processor between looks at the clock: a Go sleep that short
// lasts about a millisecond on Linux (the runtime's idle wait has
// millisecond resolution), which would turn a 100µs critical section into
// 1ms and hide the lock's own hand-off cost. Longer holds sleep, as a holder
// waiting on I/O would.
func hold(d time.Duration) {
	if d >= time.Millisecond {
		time.Sleep(d)
		return
	}
	for start := time.Now(); time.Since(start) < d; {
		runtime.Gosched()
	}
}
