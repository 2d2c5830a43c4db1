package dlocktest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
)

// Op names a [dlock.Backend] method that [Faulty] can make fail.
type Op int

// The operations of [dlock.Backend].
const (
	OpAcquire Op = iota
	OpRefresh
	OpRelease
	OpInspect
)

// String returns the operation's name, as in error messages.
func (op Op) String() string {
	switch op {
	case OpAcquire:
		return "acquire"
	case OpRefresh:
		return "refresh"
	case OpRelease:
		return "release"
	case OpInspect:
		return "inspect"
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// Fault describes a failure [Faulty] injects into an operation.
type Fault struct {
	// Err is the error the call returns, wrapped. Default
	// [dlock.ErrUnavailable], unless Delay is set: a Fault with only a
	// Delay makes calls slow, not failed.
	Err error
	// After makes the call reach the store first and fail (or be slow) on
	// the way back, as when a reply is lost: the operation took effect but
	// the caller cannot know. Otherwise the store is reached only after
	// the delay, and never when the call fails.
	After bool
	// Delay holds the call up, honouring its context: if the context ends
	// first, the call returns its error (wrapped).
	Delay time.Duration
	// Times is how many calls are affected before the operation heals by
	// itself; 0 means every call until [Faulty.Clear].
	Times int
}

// Faulty wraps a backend and makes chosen operations fail on demand, to test
// what the core and callers do when the store misbehaves. Set Backend (a
// real one, such as memlock.New()) before use; the zero value of the rest is
// ready. Faulty is safe for concurrent use.
//
// Faulty has only the [dlock.Backend] methods: the optional capabilities of
// the wrapped backend are hidden, so a client over it polls instead of being
// notified, and List, Stats, Cleanup and Break report [dlock.ErrUnsupported].
type Faulty struct {
	dlock.Backend

	mu     sync.Mutex
	faults map[Op]Fault
	calls  map[Op]int
}

var _ dlock.Backend = (*Faulty)(nil)

// Inject makes calls of op fail as f says, replacing any earlier fault of op.
func (f *Faulty) Inject(op Op, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.faults == nil {
		f.faults = make(map[Op]Fault)
	}
	if fault.Err == nil && fault.Delay <= 0 {
		fault.Err = dlock.ErrUnavailable
	}
	f.faults[op] = fault
}

// Clear heals op: its calls reach the store again.
func (f *Faulty) Clear(op Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.faults, op)
}

// Calls returns how many times op was called, failed calls included.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// call counts a call of op and returns the fault it suffers, if any.
func (f *Faulty) call(op Op) (Fault, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = make(map[Op]int)
	}
	f.calls[op]++
	fault, ok := f.faults[op]
	if !ok {
		return Fault{}, false
	}
	if fault.Times > 0 {
		fault.Times--
		if fault.Times == 0 {
			delete(f.faults, op)
		} else {
			f.faults[op] = fault
		}
	}
	return fault, true
}

// do runs call (the real operation) as fault says and returns the error to
// report: call's own, the injected one, or the context's if the delay was
// cut short.
func (f *Faulty) do(ctx context.Context, op Op, call func() error) error {
	fault, ok := f.call(op)
	if !ok {
		return call()
	}
	var err error
	if fault.After {
		err = call()
	}
	if fault.Delay > 0 {
		t := time.NewTimer(fault.Delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return fmt.Errorf("dlocktest: %v delayed: %w", op, context.Cause(ctx))
		case <-t.C:
		}
	}
	if fault.Err != nil {
		return fmt.Errorf("dlocktest: injected %v fault: %w", op, fault.Err)
	}
	if !fault.After {
		err = call()
	}
	return err
}

// Acquire implements [dlock.Backend].
func (f *Faulty) Acquire(ctx context.Context, req dlock.AcquireRequest) (rec dlock.Record, granted bool, err error) {
	err = f.do(ctx, OpAcquire, func() (err error) {
		rec, granted, err = f.Backend.Acquire(ctx, req)
		return err
	})
	if err != nil {
		return dlock.Record{}, false, err
	}
	return rec, granted, nil
}

// Refresh implements [dlock.Backend].
func (f *Faulty) Refresh(ctx context.Context, key, token string, ttl time.Duration) (rec dlock.Record, err error) {
	err = f.do(ctx, OpRefresh, func() (err error) {
		rec, err = f.Backend.Refresh(ctx, key, token, ttl)
		return err
	})
	if err != nil {
		return dlock.Record{}, err
	}
	return rec, nil
}

// Release implements [dlock.Backend].
func (f *Faulty) Release(ctx context.Context, key, token string) error {
	return f.do(ctx, OpRelease, func() error { return f.Backend.Release(ctx, key, token) })
}

// Inspect implements [dlock.Backend].
func (f *Faulty) Inspect(ctx context.Context, key string) (rec dlock.Record, found bool, err error) {
	err = f.do(ctx, OpInspect, func() (err error) {
		rec, found, err = f.Backend.Inspect(ctx, key)
		return err
	})
	if err != nil {
		return dlock.Record{}, false, err
	}
	return rec, found, nil
}
