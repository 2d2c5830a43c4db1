package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

func newReleaseCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "release KEY [TOKEN]",
		Short: "Release a lock taken with acquire",
		Long: `Release frees KEY if TOKEN (default $DLOCK_TOKEN) holds it. It exits 1 if TOKEN
does not hold KEY (already released, expired, broken, or a wrong token); the
lock of whoever holds KEY now is never touched.`,
		ValidArgsFunction: e.completeKeys,
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.release(cmd, args)
		},
	}
}

// releaseJSON is the result of release with --json.
type releaseJSON struct {
	Key      string `json:"key"`
	Locked   bool   `json:"locked"`
	Released bool   `json:"released"`
}

func (e *env) release(cmd *cobra.Command, args []string) error {
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
	err = c.Backend().Release(opCtx, key, token)
	if errors.Is(err, dlock.ErrNotHeld) && e.json {
		if err := e.printJSON(releaseJSON{Key: key}); err != nil {
			return err
		}
		return silentExit(ExitNotHeld)
	}
	if err != nil {
		return notHeld(key, err)
	}
	if e.json {
		return e.printJSON(releaseJSON{Key: key, Released: true})
	}
	e.say("released %q", key)
	return nil
}
