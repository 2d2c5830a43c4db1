package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newBreakCmd(e *env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "break --force KEY",
		Short: "Force-release a lock whoever holds it (admin)",
		Long: `Break frees KEY whoever holds it, for an administrator clearing a lock left by
a stuck job. Without --force it only says what it would break and exits 64.
The former holder's refresh and release then fail; a 'dlock run' holding it
notices at its next refresh, stops its command and exits 79. Exits 1 if KEY
was not locked.`,
		Args: exactArgs("KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.breakLock(cmd, args[0], force)
		},
		ValidArgsFunction: e.completeKeys,
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "really break the lock")
	return cmd
}

// breakJSON is the result of break with --json; lease fields describe the
// lock that was broken.
type breakJSON struct {
	Key    string `json:"key"`
	Broken bool   `json:"broken"`
	*leaseJSON
}

func (e *env) breakLock(cmd *cobra.Command, key string, force bool) error {
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
	if !force {
		rec, found, err := c.Inspect(opCtx, key)
		if err != nil {
			return err
		}
		if !found {
			return exitWith(ExitNotHeld, "%q is not locked; nothing to break", key)
		}
		return usageErr(cmd, "would break %q held by %s; add --force to do it", key, holderLine(rec, time.Now()))
	}
	rec, found, err := c.Break(opCtx, key)
	if err != nil {
		return err
	}
	if e.json {
		out := breakJSON{Key: key, Broken: found}
		if found {
			out.leaseJSON = leaseOf(rec)
		}
		if err := e.printJSON(out); err != nil {
			return err
		}
	}
	if !found {
		if e.json {
			return silentExit(ExitNotHeld)
		}
		return exitWith(ExitNotHeld, "%q is not locked; nothing to break", key)
	}
	if !e.json && !e.quiet {
		fmt.Fprintf(e.stdout, "broke %q: %s\n", key, holderLine(rec, time.Now()))
	}
	return nil
}
