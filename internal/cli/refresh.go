package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

func newRefreshCmd(e *env) *cobra.Command {
	ttl := dlock.DefaultTTL
	cmd := &cobra.Command{
		Use:   "refresh [flags] KEY [TOKEN]",
		Short: "Extend a lock taken with acquire",
		Long: `Refresh extends the lease on KEY held by TOKEN (default $DLOCK_TOKEN) to --ttl
from now. It exits 1 if TOKEN no longer holds KEY: the lock was released,
expired or broken, and the script must assume it lost the lock.`,
		ValidArgsFunction: e.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.refresh(cmd, args, ttl)
		},
	}
	cmd.Flags().Var(&durationValue{d: &ttl}, "ttl", "new lease length, from now")
	return cmd
}

// refreshJSON is the result of refresh with --json.
type refreshJSON struct {
	Key       string `json:"key"`
	Refreshed bool   `json:"refreshed"`
	Locked    bool   `json:"locked"`
	*leaseJSON
}

func (e *env) refresh(cmd *cobra.Command, args []string, ttl time.Duration) error {
	key, token, err := keyAndToken(cmd, args)
	if err != nil {
		return err
	}
	if ttl == 0 {
		return usageErr(cmd, "--ttl must be positive")
	}
	if err := dlock.ValidateTTL(ttl); err != nil {
		return usageErr(cmd, "bad --ttl: %v is outside %v..%v", ttl, dlock.MinTTL, dlock.MaxTTL)
	}
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	opCtx, cancel := e.opContext(ctx)
	defer cancel()
	// The core's Lock cannot be rebuilt from a token in another process:
	// the backend primitive is the refresh.
	rec, err := c.Backend().Refresh(opCtx, key, token, ttl)
	if errors.Is(err, dlock.ErrNotHeld) && e.json {
		if err := e.printJSON(refreshJSON{Key: key}); err != nil {
			return err
		}
		return silentExit(ExitNotHeld)
	}
	if err != nil {
		return notHeld(key, err)
	}
	if e.json {
		return e.printJSON(refreshJSON{Key: key, Refreshed: true, Locked: true, leaseJSON: leaseOf(rec)})
	}
	now := time.Now()
	e.say("refreshed %q: expires %s", key, when(rec.ExpiresAt, now))
	return nil
}
