package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

func newListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List live locks, optionally only keys starting with PREFIX",
		Long: `List shows every live lock whose key starts with PREFIX (all locks without
it), sorted by key: key, lock id, fence, owner, acquired and expires. Expired
leases are not shown; 'dlock cleanup' removes their records. With --json the
output is a JSON array of records.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErr(cmd, "unexpected argument %q (one PREFIX at most)", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return e.list(cmd, prefix)
		},
	}
}

func (e *env) list(cmd *cobra.Command, prefix string) error {
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	opCtx, cancel := e.opContext(ctx)
	defer cancel()
	recs, err := c.List(opCtx, prefix)
	if err != nil {
		return err
	}
	if e.json {
		if recs == nil {
			recs = []dlock.Record{} // [] rather than null
		}
		return e.printJSON(recs)
	}
	if e.quiet {
		return nil
	}
	if len(recs) == 0 {
		if prefix != "" {
			fmt.Fprintf(e.stdout, "no locks on keys starting with %q\n", prefix)
		} else {
			fmt.Fprintln(e.stdout, "no locks")
		}
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tLOCK ID\tFENCE\tOWNER\tACQUIRED\tEXPIRES")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", printable(r.Key), r.LockID, r.Fence,
			ownerString(r.Owner), relTime(r.AcquiredAt, now), relTime(r.ExpiresAt, now))
	}
	return tw.Flush()
}

// printable keeps a key on one table cell: keys may hold spaces and tabs
// are not allowed, but quoting keeps odd ones readable.
func printable(key string) string {
	if strings.ContainsAny(key, " \"'") {
		return fmt.Sprintf("%q", key)
	}
	return key
}

// completeKeys offers the keys of live locks to shell completion.
func (e *env) completeKeys(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	c, err := e.client(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	recs, err := c.List(ctx, toComplete)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	keys := make([]string, len(recs))
	for i, r := range recs {
		keys[i] = r.Key
	}
	return keys, cobra.ShellCompDirectiveNoFileComp
}
