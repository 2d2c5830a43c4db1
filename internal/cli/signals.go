package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// forwardedSignals are the signals dlock catches. Every command stops
// cleanly on them; `dlock run` forwards them to its child instead.
var forwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}

// signalRouter owns the process's SIGINT/SIGTERM/SIGHUP for the length of
// Main. By default a signal cancels ctx with an [interruptedError] cause
// naming it (so waits end and the exit status is 128+N). While a channel is
// diverted in (`dlock run` with a child), signals go there instead and ctx
// is left alone: the child decides whether it stops, and dlock follows.
//
// One router, not signal.NotifyContext in main plus a second Notify in run:
// NotifyContext's cause does not expose the signal number, and two
// independent handlers would race over who reacts to the same signal.
type signalRouter struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	ch     chan os.Signal
	done   chan struct{}
	wg     sync.WaitGroup

	mu     sync.Mutex
	divert chan<- os.Signal
}

func newSignalRouter(parent context.Context) *signalRouter {
	r := &signalRouter{ch: make(chan os.Signal, 4), done: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancelCause(parent)
	signal.Notify(r.ch, forwardedSignals...)
	r.wg.Add(1)
	go r.loop()
	return r
}

func (r *signalRouter) loop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case sig := <-r.ch:
			r.deliver(sig)
		}
	}
}

func (r *signalRouter) deliver(sig os.Signal) {
	r.mu.Lock()
	to := r.divert
	r.mu.Unlock()
	if to == nil {
		r.cancel(&interruptedError{sig: sig})
		return
	}
	select {
	case to <- sig:
	default: // the receiver is behind; it has signals to act on already
	}
}

// divertTo sends signals to ch until the returned function is called. A
// signal that arrived before divertTo has already cancelled ctx: callers
// check ctx after diverting.
func (r *signalRouter) divertTo(ch chan<- os.Signal) (undo func()) {
	r.mu.Lock()
	r.divert = ch
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		r.divert = nil
		r.mu.Unlock()
	}
}

// stop uninstalls the handlers and releases the context.
func (r *signalRouter) stop() {
	signal.Stop(r.ch)
	close(r.done)
	r.wg.Wait()
	r.cancel(nil)
}

// interruptedError is the cause of a command's context after dlock caught
// a signal.
type interruptedError struct{ sig os.Signal }

func (e *interruptedError) Error() string { return fmt.Sprintf("interrupted by %s", signalName(e.sig)) }

func (e *interruptedError) exitCode() int {
	if s, ok := e.sig.(syscall.Signal); ok {
		return exitSignalBase + int(s)
	}
	return exitSignalBase + int(syscall.SIGTERM)
}

// signalName names a signal the way people write it: SIGTERM, not
// "terminated".
func signalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGKILL:
		return "SIGKILL"
	}
	if s, ok := sig.(syscall.Signal); ok {
		return fmt.Sprintf("signal %d (%s)", int(s), s)
	}
	return sig.String()
}
