package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status KEY",
		Short: "Show who holds a lock; exit 0 if held, 1 if free",
		Long: `Status shows the lease on KEY: lock id, fence, owner, when it was acquired and
when it expires. Like test(1), it exits 0 when KEY is locked and 1 when it is
free, so scripts can write 'if dlock status -q KEY; then ...'.`,
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
	code := ExitOK
	if !found {
		code = ExitNotHeld
	}
	switch {
	case e.json:
		out := statusJSON{Key: key, Locked: found}
		if found {
			out.leaseJSON = leaseOf(rec)
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
	case e.quiet:
	case !found:
		fmt.Fprintf(e.stdout, "%q is free\n", key)
	default:
		fields(e.stdout, append([][2]string{{"key", key}, {"locked", "yes"}}, recordFields(rec, time.Now())...)...)
	}
	if code != ExitOK {
		return silentExit(code)
	}
	return nil
}
