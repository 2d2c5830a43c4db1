package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newStatsCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Count lock records: total, active and expired",
		Long: `Stats counts the backend's lock records: total, active (live leases) and
expired (records 'dlock cleanup' would remove). With --json the fields are
total_locks, active_locks, expired_locks and instance_locks (always 0 here:
it counts locks held by the calling process, and dlock stats holds none).`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.stats(cmd)
		},
	}
}

func (e *env) stats(cmd *cobra.Command) error {
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	opCtx, cancel := e.opContext(ctx)
	defer cancel()
	st, err := c.Stats(opCtx)
	if err != nil {
		return err
	}
	if e.json {
		return e.printJSON(st)
	}
	if !e.quiet {
		fields(e.stdout,
			[2]string{"total", fmt.Sprint(st.Total)},
			[2]string{"active", fmt.Sprint(st.Active)},
			[2]string{"expired", fmt.Sprint(st.Expired)})
	}
	return nil
}
