package cli

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

func newReleaseCmd(e *env) *cobra.Command {
	var minHold time.Duration
	cmd := &cobra.Command{
		Use:   "release KEY [TOKEN]",
		Short: "Release a lock taken with acquire",
		Long: `Release frees KEY if TOKEN (default $DLOCK_TOKEN) holds it. It exits 1 if TOKEN
does not hold KEY (already released, expired, broken, or a wrong token); the
lock of whoever holds KEY now is never touched.

With --min-hold D, a lock acquired less than D ago is not freed but kept
until D after it was acquired, so that a job started by cron on several
servers runs once per period even when it ends sooner than the servers'
clocks differ (what 'dlock run --min-hold' does). The acquisition time is
the acquirer's clock, as 'dlock status' shows it.`,
		Example: `  TOKEN=$(dlock acquire -q import) || exit 0
  ./import.sh
  dlock release --min-hold 50m import "$TOKEN"   # hourly on every server, runs once an hour`,
		ValidArgsFunction: e.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkMinHold(cmd, minHold); err != nil {
				return err
			}
			return e.release(cmd, args, minHold)
		},
	}
	cmd.Flags().Var(&durationValue{d: &minHold}, "min-hold", "keep KEY taken until this long after it was acquired, if that is later than now")
	return cmd
}

// releaseJSON is the result of release with --json.
type releaseJSON struct {
	Key       string     `json:"key"`
	Locked    bool       `json:"locked"`
	Released  bool       `json:"released"`
	KeptUntil *time.Time `json:"kept_until,omitempty"`
}

func (e *env) release(cmd *cobra.Command, args []string, minHold time.Duration) error {
	key, token, err := keyAndToken(cmd, args)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	// A release should happen even when the user hits Ctrl-C right then.
	opCtx, cancel := e.cleanupContext(ctx)
	defer cancel()
	var until time.Time
	if minHold > 0 {
		rec, found, err := c.Inspect(opCtx, key)
		if err != nil {
			return err
		}
		if found && rec.LockID == dlock.LockID(token) {
			until = rec.AcquiredAt.Add(minHold)
		}
	}
	kept, err := c.ReleaseToken(opCtx, key, token, until)
	if errors.Is(err, dlock.ErrNotHeld) && e.json {
		if err := e.printJSON(releaseJSON{Key: key}); err != nil {
			return err
		}
		return silentExit(ExitNotHeld)
	}
	if err != nil {
		return notHeld(key, err)
	}
	if kept {
		if e.json {
			return e.printJSON(releaseJSON{Key: key, Locked: true, KeptUntil: &until})
		}
		e.say("kept %q until %s (--min-hold %v after it was acquired)", key, until.Format(time.DateTime), minHold)
		return nil
	}
	if e.json {
		return e.printJSON(releaseJSON{Key: key, Released: true})
	}
	e.say("released %q", key)
	return nil
}
