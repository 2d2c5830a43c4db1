package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dlock-dev/dlock"
)

func newAcquireCmd(e *env) *cobra.Command {
	var f acquireFlags
	cmd := &cobra.Command{
		Use:   "acquire [flags] KEY",
		Short: "Take a lock and print its token, for scripts that hold it across commands",
		Long: `Acquire takes KEY and prints the lock's token on stdout, and nothing else, so
that a script can hold the lock across several commands:

  tok=$(dlock acquire --ttl 10m backup) || exit
  ...; dlock refresh backup "$tok"; ...
  dlock release backup "$tok"

The lock is not tied to the dlock process (it outlives it); it is held until
released or until its TTL passes without a refresh. With --json the result is
a JSON object with the token, lock id, fence and expiry. If the key is held
by someone else, acquire exits 75 (--conflict-exit-code) naming the holder;
with --wait it waits first, and says whom for when stderr is a terminal.`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.acquire(cmd, args[0], &f)
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&f.label, "label", "", "free-form description of the holder, shown by status and list")
	return cmd
}

// acquireFlags are the flags shared by acquire and run.
type acquireFlags struct {
	ttl          time.Duration
	wait         time.Duration // 0: no wait; waitForever: until granted or interrupted
	conflictCode int
	label        string
}

func (f *acquireFlags) register(fs *pflag.FlagSet) {
	f.ttl = dlock.DefaultTTL
	f.conflictCode = ExitConflict
	fs.Var(&durationValue{d: &f.ttl}, "ttl", "lease length; the lock expires this long after the last grant or refresh")
	fs.Var(&waitValue{d: &f.wait}, "wait", `how long to wait for a held lock: 0 = fail at once (default), "forever" = until granted or interrupted`)
	fs.IntVarP(&f.conflictCode, "conflict-exit-code", "E", ExitConflict, "exit status when the lock is held by someone else (0-255)")
}

func (f *acquireFlags) check(cmd *cobra.Command) error {
	if f.ttl == 0 {
		return usageErr(cmd, "--ttl must be positive")
	}
	if err := dlock.ValidateTTL(f.ttl); err != nil {
		return usageErr(cmd, "bad --ttl: %v is outside %v..%v", f.ttl, dlock.MinTTL, dlock.MaxTTL)
	}
	if f.conflictCode < 0 || f.conflictCode > 255 {
		return usageErr(cmd, "--conflict-exit-code %d is outside 0..255", f.conflictCode)
	}
	return nil
}

// conflictError reports that the key is held by someone else, naming the
// holder. It exits with the --conflict-exit-code.
type conflictError struct {
	key    string
	holder *dlock.Record // nil if the store did not say
	waited time.Duration // >0 when we gave up waiting
	code   int
}

func (e *conflictError) Error() string {
	msg := fmt.Sprintf("%q is locked", e.key)
	if e.holder != nil {
		msg += " by " + holderLine(*e.holder, time.Now())
	}
	if e.waited > 0 {
		msg = fmt.Sprintf("gave up after waiting %s: %s", humanDuration(e.waited), msg)
	}
	return msg
}

// waitingFor says how long a command waits, for the line it prints when
// it starts waiting.
func waitingFor(wait time.Duration) string {
	if wait < 0 {
		return "waiting until it is free (--wait forever; Ctrl-C gives up)"
	}
	return "waiting up to " + humanDuration(wait)
}

// testHookWaiting, if set, is called when a command starts waiting for a
// lock, so that tests can interrupt a wait without sleeping.
var testHookWaiting func()

// take acquires key on c, waiting per f.wait. Errors: *conflictError when
// someone else holds it, *interruptedError when a signal ended the wait,
// an unavailable error when the store did not answer within --timeout or
// was still unavailable when the wait ended, or the core's error.
func (e *env) take(ctx context.Context, c *dlock.Client, key string, f *acquireFlags, opts ...dlock.Option) (*dlock.Lock, error) {
	opts = append([]dlock.Option{dlock.WithTTL(f.ttl)}, opts...)
	actx, cancel := ctx, context.CancelFunc(func() {})
	switch {
	case f.wait == 0:
		actx, cancel = context.WithTimeout(ctx, e.timeout)
		opts = append(opts, dlock.WithMaxWait(0))
	case f.wait > 0:
		// The wait is bounded by the core; the extra --timeout bounds the
		// last store call, which may start just before the wait ends.
		actx, cancel = context.WithTimeout(ctx, f.wait+e.timeout)
		opts = append(opts, dlock.WithMaxWait(f.wait))
	}
	defer cancel()
	if f.wait != 0 && !e.quiet && e.stderrTerminal() {
		opts = append(opts, dlock.WithOnWait(func(holder dlock.Record) {
			fmt.Fprintf(e.stderr, "dlock: %q is locked by %s; %s\n", key, holderLine(holder, time.Now()), waitingFor(f.wait))
		}), dlock.WithOnOutage(func(err error) {
			fmt.Fprintf(e.stderr, "dlock: store unavailable while waiting for %q (%s); still %s\n", key, oneLine(err.Error()), waitingFor(f.wait))
		}))
	}
	if f.wait != 0 && testHookWaiting != nil {
		testHookWaiting()
	}
	start := time.Now()
	lock, err := c.Acquire(actx, key, opts...)
	if err == nil {
		return lock, nil
	}
	var ie *interruptedError
	if errors.As(err, &ie) || errors.As(context.Cause(ctx), &ie) {
		return nil, fmt.Errorf("%w while waiting for %q", ie, key)
	}
	var nae *dlock.NotAcquiredError
	if !errors.As(err, &nae) {
		return nil, err
	}
	switch {
	case nae.Cause == nil:
		return nil, &conflictError{key: key, holder: nae.Holder, code: f.conflictCode}
	case errors.Is(nae.Cause, dlock.ErrUnavailable):
		// The wait ended while the store did not answer: the outage, not
		// the holder, is what the caller should act on.
		return nil, &exitError{code: ExitUnavailable, err: err}
	case errors.Is(nae.Cause, context.DeadlineExceeded) && f.wait > 0 && time.Since(start) >= f.wait:
		return nil, &conflictError{key: key, holder: nae.Holder, waited: f.wait, code: f.conflictCode}
	case errors.Is(nae.Cause, context.DeadlineExceeded):
		return nil, fmt.Errorf("acquire %q: %w: no answer within --timeout %v", key, dlock.ErrUnavailable, e.timeout)
	}
	return nil, err
}

// acquireJSON is the result of acquire with --json. On a conflict only
// key, locked, already_locked, locked_by and holder are set.
type acquireJSON struct {
	Key           string `json:"key"`
	Locked        bool   `json:"locked"`
	AlreadyLocked bool   `json:"already_locked"`
	Token         string `json:"token,omitempty"`
	*leaseJSON
	LockedBy string     `json:"locked_by,omitempty"`
	Holder   *leaseJSON `json:"holder,omitempty"`
}

func (e *env) acquire(cmd *cobra.Command, key string, f *acquireFlags) error {
	if err := f.check(cmd); err != nil {
		return err
	}
	if err := checkKey(cmd, key); err != nil {
		return err
	}
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	// PID 0: the lock belongs to the script, not to this short-lived
	// process, so the file backend must not free it when dlock exits.
	lock, err := e.take(ctx, c, key, f, dlock.WithOwner(dlock.Owner{Host: host, Label: f.label}))
	var ce *conflictError
	if errors.As(err, &ce) && e.json {
		out := acquireJSON{Key: key, AlreadyLocked: true}
		if ce.holder != nil {
			out.LockedBy = ce.holder.LockID
			out.Holder = leaseOf(*ce.holder)
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
		return silentExit(ce.code)
	}
	if err != nil {
		return e.quietConflict(err)
	}
	if e.json {
		return e.printJSON(acquireJSON{Key: key, Locked: true, Token: lock.Token(), leaseJSON: leaseOf(lock.Record())})
	}
	// The token is printed even with --quiet: it is the result, not chatter.
	_, err = fmt.Fprintln(e.stdout, lock.Token())
	return err
}

// quietConflict drops the conflict line under --quiet, keeping the exit
// status.
func (e *env) quietConflict(err error) error {
	var ce *conflictError
	if e.quiet && errors.As(err, &ce) {
		return silentExit(ce.code)
	}
	return err
}
