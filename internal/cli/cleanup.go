package cli

import (
	"github.com/spf13/cobra"
)

func newCleanupCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove the records of expired locks and print how many",
		Long: `Cleanup removes the records of expired leases and prints how many it removed.
Live locks are never touched, and fences keep growing after a cleanup. Expired
leases are already free; cleanup only reclaims their space. Safe to run from
cron.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.cleanup(cmd)
		},
	}
}

// cleanupJSON is the result of cleanup with --json.
type cleanupJSON struct {
	Cleaned int `json:"cleaned"`
}

func (e *env) cleanup(cmd *cobra.Command) error {
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	opCtx, cancel := e.opContext(ctx)
	defer cancel()
	n, err := c.Cleanup(opCtx)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(cleanupJSON{Cleaned: n})
	}
	e.say("removed %d expired lock record%s", n, plural(n))
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
