package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dlock-dev/dlock"
)

// tokenEnv names the environment variable that supplies TOKEN to refresh
// and release when it is not given as an argument (`dlock run
// --export-token` sets it for its child).
const tokenEnv = "DLOCK_TOKEN"

// keyAndToken reads KEY and TOKEN (or $DLOCK_TOKEN) from args.
func keyAndToken(cmd *cobra.Command, args []string) (key, token string, err error) {
	switch len(args) {
	case 0:
		return "", "", usageErr(cmd, "missing KEY and TOKEN")
	case 1:
		token = os.Getenv(tokenEnv)
		if token == "" {
			return "", "", usageErr(cmd, "missing TOKEN (give it as an argument or in $%s)", tokenEnv)
		}
	case 2:
		token = args[1]
	default:
		return "", "", usageErr(cmd, "unexpected argument %q", args[2])
	}
	key = args[0]
	if err := checkKey(cmd, key); err != nil {
		return "", "", err
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", "", usageErr(cmd, "empty TOKEN")
	}
	return key, token, nil
}

// notHeld reports a refresh or release with a token that does not hold key.
func notHeld(key string, err error) error {
	if errors.Is(err, dlock.ErrNotHeld) {
		return &exitError{code: ExitNotHeld, err: fmt.Errorf(
			"%q is not held by this token (released, expired, broken, or a wrong token)", key)}
	}
	return err
}
