// Package cli implements the dlock command-line tool. [Main] is the whole
// program: it takes its arguments, streams and a context, and returns the
// exit status, so tests run every subcommand in-process. Each subcommand
// lives in its own file (run.go, acquire.go, ...); backend URLs are parsed
// in backend.go and exit codes are listed in exitcodes.go.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/backendurl"
)

// env is what every subcommand shares: streams, global flags and signals.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	signals        *signalRouter

	backendURL string
	json       bool
	quiet      bool
	timeout    time.Duration

	clients []*dlock.Client // to drain when the command is done
	closers []io.Closer     // backends to close after that
}

// Main runs the dlock tool with args (without the program name) and returns
// its exit status. It installs handlers for SIGINT, SIGTERM and SIGHUP while
// it runs: they cancel the command's context (exit 128+N), except while
// `dlock run` has a child, which receives them instead.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	sigs := newSignalRouter(ctx)
	defer sigs.stop()
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, signals: sigs}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(sigs.ctx)
	e.drain()
	for _, c := range e.closers {
		_ = c.Close() // only frees descriptors; the outcome is decided
	}
	return e.exit(err)
}

func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "dlock",
		Short: "Distributed locks for shell scripts, cron jobs and admins",
		Long: `dlock takes leases on keys in a shared store so that only one process at a
time does a job: run a command while holding a lock, or acquire, refresh and
release a lock from a shell script, and inspect or break locks.

Backend: --backend URL or $DLOCK_BACKEND. Accepted forms:
` + backendHelp() + `
` + exitCodeHelp() + `
Environment:
  DLOCK_BACKEND  backend URL when --backend is not given
  DLOCK_DIR      directory of the default file backend
  DLOCK_TOKEN    TOKEN for refresh and release when not given as an argument
  'dlock run' sets DLOCK_KEY, DLOCK_FENCE and DLOCK_LOCK_ID for COMMAND.

Durations are Go durations (500ms, 30s, 5m, 1h30m) or plain seconds (10, 2.5).

See 'dlock help COMMAND' for each command.`,
		SilenceUsage:  true, // errors are one line; usage is shown only on request
		SilenceErrors: true, // Main prints the error itself
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if e.timeout == 0 {
				return usageErr(cmd, "--timeout must be positive")
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageErr(cmd, "%v", err)
	})
	pf := root.PersistentFlags()
	pf.StringVar(&e.backendURL, "backend", "", "backend URL (default $DLOCK_BACKEND, else the per-user file directory)")
	pf.BoolVar(&e.json, "json", false, "print the result as JSON on stdout")
	pf.BoolVarP(&e.quiet, "quiet", "q", false, "print nothing but errors; the exit status tells the outcome")
	e.timeout = 30 * time.Second
	pf.Var(&durationValue{d: &e.timeout}, "timeout", "bound on each store operation, waits excluded, and on giving back before exit an acquire that failed in flight")

	root.AddCommand(
		newRunCmd(e),
		newAcquireCmd(e),
		newRefreshCmd(e),
		newReleaseCmd(e),
		newStatusCmd(e),
		newListCmd(e),
		newStatsCmd(e),
		newCleanupCmd(e),
		newBreakCmd(e),
		newVersionCmd(e),
		newBenchCmd(e),
		newStressCmd(e),
		newStressWorkerCmd(e),
	)
	return root
}

// stderrTerminal reports whether stderr is a terminal: a person is
// watching, so progress and waits may be shown (not to cron, which mails
// whatever a job prints).
func (e *env) stderrTerminal() bool {
	f, ok := e.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// exitError carries the exit status a command chose. A nil err means the
// outcome was already reported (or needs no words): nothing more is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// exitWith returns an error that makes Main exit with code and print msg
// (formatted) as one line on stderr.
func exitWith(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// silentExit makes Main exit with code without printing anything.
func silentExit(code int) error { return &exitError{code: code} }

// usageErr reports a bad command line, naming the command and where to
// read about it, in one line.
func usageErr(cmd *cobra.Command, format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf("%s: %s (see '%s --help')",
		cmd.Name(), fmt.Sprintf(format, args...), cmd.CommandPath())}
}

// exit turns the error of a command into an exit status and prints its
// one-line message.
func (e *env) exit(err error) int {
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	var ee *exitError
	if errors.As(err, &ee) && ee.err == nil {
		return code
	}
	fmt.Fprintln(e.stderr, "dlock: "+oneLine(cobraMessage(err.Error())))
	return code
}

// exitCode maps an error to the documented exit status.
func exitCode(err error) int {
	var ee *exitError
	var ce *conflictError
	var ie *interruptedError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ie):
		return ie.exitCode()
	case errors.Is(err, dlock.ErrInvalidKey), errors.Is(err, dlock.ErrInvalidTTL),
		errors.Is(err, dlock.ErrInvalidOption), errors.Is(err, dlock.ErrUnsupported):
		return ExitUsage
	case errors.Is(err, dlock.ErrNotAcquired):
		return ExitConflict
	case errors.Is(err, dlock.ErrNotHeld):
		return ExitNotHeld
	case errors.Is(err, dlock.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return ExitUnavailable
	case errors.Is(err, dlock.ErrCorrupt):
		return ExitInternal
	}
	// Errors that do not come from dlock are cobra's: unknown commands and
	// the like. Anything of ours is typed above.
	if strings.HasPrefix(err.Error(), "unknown command") {
		return ExitUsage
	}
	return ExitInternal
}

// cobraMessage rewrites cobra's multi-line "unknown command" error, with
// its "Did you mean this?" list, into one line.
func cobraMessage(msg string) string {
	head, suggestions, found := strings.Cut(msg, "Did you mean this?")
	if !strings.HasPrefix(msg, "unknown command") {
		return msg
	}
	head = strings.TrimSpace(head)
	if found {
		head += "; did you mean " + strings.Join(strings.Fields(suggestions), " or ") + "?"
	}
	return head + " (see 'dlock --help')"
}

// oneLine flattens a message onto one line: joined errors and cobra's
// suggestions span several. The core prefixes its errors with "dlock: ";
// Main adds that prefix once, so inner repeats are dropped.
func oneLine(msg string) string {
	msg = dropCorePrefix(msg)
	msg = strings.Join(strings.Fields(msg), " ")
	return strings.TrimSuffix(msg, ".")
}

// dropCorePrefix removes every "dlock: " that starts a word, leaving the
// ends of backend prefixes such as "etcdlock: " alone.
func dropCorePrefix(msg string) string {
	const prefix = "dlock: "
	var b strings.Builder
	for {
		i := strings.Index(msg, prefix)
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		inWord := i > 0 && unicode.IsLetter(rune(msg[i-1]))
		b.WriteString(msg[:i])
		if inWord {
			b.WriteString(prefix)
		}
		msg = msg[i+len(prefix):]
	}
}

// opContext bounds one store operation by --timeout.
func (e *env) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

// cleanupContext is for releases made on the way out: they must happen even
// after a signal cancelled ctx, but not hang.
func (e *env) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), e.timeout)
}

// client opens the backend named by --backend, $DLOCK_BACKEND or the
// default directory, and wraps it in a dlock client.
func (e *env) client(ctx context.Context, opts ...dlock.Option) (*dlock.Client, error) {
	b, err := openBackend(backendurl.WithTimeout(ctx, e.timeout), e.backendURL, os.Getenv)
	if err != nil {
		return nil, err
	}
	if c, ok := b.(io.Closer); ok {
		e.closers = append(e.closers, c)
	}
	c := dlock.New(b, opts...)
	e.clients = append(e.clients, c)
	return c, nil
}

// drain waits, at most --timeout, for what the clients and their backends
// still run in the background: an acquire that failed after reaching the
// store gives its token back that way, and exiting first would leave the
// key held by nobody until its TTL.
func (e *env) drain() {
	ctx, cancel := e.cleanupContext(context.Background())
	defer cancel()
	for _, c := range e.clients {
		_ = c.Drain(ctx) // what is not back by then expires with its TTL
	}
}

// key validates a KEY argument, so that a bad key is a usage error before
// any store is touched.
func checkKey(cmd *cobra.Command, key string) error {
	if err := dlock.ValidateKey(key); err != nil {
		return usageErr(cmd, "bad KEY: %s", strings.TrimPrefix(err.Error(), "dlock: "))
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a message that names the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErr(cmd, "missing %s", strings.Join(names[len(args):], " and "))
		case len(args) > len(names):
			return usageErr(cmd, "unexpected argument %q", args[len(names)])
		}
		return nil
	}
}

// printJSON writes v as one indented JSON object (or array) on stdout.
func (e *env) printJSON(v any) error {
	return writeJSON(e.stdout, v)
}

// say prints a human line on stdout unless --quiet or --json.
func (e *env) say(format string, args ...any) {
	if e.quiet || e.json {
		return
	}
	fmt.Fprintf(e.stdout, format+"\n", args...)
}
