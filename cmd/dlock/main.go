// Command dlock runs commands under distributed locks and manages locks from
// shell scripts. See docs/cli.md or `dlock --help`.
package main

import (
	"context"
	"os"

	"github.com/dlock-dev/dlock/internal/cli"
)

// main only wires the process to cli.Main. Signals are not turned into a
// context here (no signal.NotifyContext): cli.Main owns SIGINT, SIGTERM and
// SIGHUP because `dlock run` must forward them to its child instead of
// stopping, and every command needs the signal's number for its exit code.
func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
