package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

func newStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status KEY",
		Short: "Show who holds a lock; exit 0 if held, 1 if free",
		Long: `Status shows the lease on KEY: lock id, fence, owner, when it was acquired and
when it expires, and, on a backend with FIFO queues (file on Linux, etcd,
redis with fifo=1), how many runs wait for it. Like test(1), it exits 0 when
KEY is locked and 1 when it is free, so scripts can write
'if dlock status -q KEY; then ...'. A free key with runs waiting goes to the
first of them: a run without --wait is refused meanwhile.`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.status(cmd, args[0])
		},
		ValidArgsFunction: e.completeKeys,
	}
}

// statusJSON is the result of status with --json; the lease fields are
// present only when locked.
type statusJSON struct {
	Key    string `json:"key"`
	Locked bool   `json:"locked"`
	// Waiting is how many wait in the key's FIFO queue, absent where the
	// backend has none.
	Waiting *int `json:"waiting,omitempty"`
	*leaseJSON
}

func (e *env) status(cmd *cobra.Command, key string) error {
	if err := checkKey(cmd, key); err != nil {
		return err
	}
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	opCtx, cancel := e.opContext(ctx)
	defer cancel()
	rec, found, err := c.Inspect(opCtx, key)
	if err != nil {
		return err
	}
	var waiting *int
	if n, err := c.Waiting(opCtx, key); err == nil {
		waiting = &n
	} else if !errors.Is(err, dlock.ErrUnsupported) {
		return err
	}
	code := ExitOK
	if !found {
		code = ExitNotHeld
	}
	switch {
	case e.json:
		out := statusJSON{Key: key, Locked: found, Waiting: waiting}
		if found {
			out.leaseJSON = leaseOf(rec)
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
	case e.quiet:
	case !found && waiting != nil && *waiting > 0:
		fmt.Fprintf(e.stdout, "%q is free; %d waiting, the first in line takes it next\n", key, *waiting)
	case !found:
		fmt.Fprintf(e.stdout, "%q is free\n", key)
	default:
		lines := append([][2]string{{"key", key}, {"locked", "yes"}}, recordFields(rec, time.Now())...)
		if waiting != nil {
			lines = append(lines, [2]string{"waiting", fmt.Sprint(*waiting)})
		}
		fields(e.stdout, lines...)
	}
	if code != ExitOK {
		return silentExit(code)
	}
	return nil
}
