package cli

import "fmt"

// Exit codes of the dlock tool. A command run by `dlock run` exits with its
// own status, which dlock passes through (128+N when it was killed by signal
// N); these are the codes dlock itself chooses. They follow sysexits.h where
// one fits, so they rarely collide with a child's own codes.
const (
	ExitOK          = 0   // success; for status: the key is locked
	ExitNotHeld     = 1   // refresh/release: token does not hold the key; status: key is free; break: nothing to break
	ExitUsage       = 64  // bad command line: unknown flag, missing KEY, bad duration, bad key, bad backend URL, unsupported operation
	ExitUnavailable = 69  // the store could not be opened or reached (unwritable directory, unreachable server)
	ExitInternal    = 70  // unexpected error, such as a corrupt lock record
	ExitConflict    = 75  // the lock is held by someone else (run, acquire); change with --conflict-exit-code
	ExitLost        = 79  // run: the lock was lost (or --max-hold reached) while the command ran; the command was stopped
	ExitCannotExec  = 126 // run: COMMAND was found but could not be executed
	ExitNotFound    = 127 // run: COMMAND was not found
	exitSignalBase  = 128 // 128+N: dlock was interrupted by signal N while waiting, or the command was killed by signal N
)

// exitCodeTable is the one place the codes are described for people: it
// is rendered into `dlock --help` and mirrored in docs/cli.md.
var exitCodeTable = []struct {
	code    string
	meaning string
}{
	{"0", "success (status: the key is locked)"},
	{"1", "the lock is not held: wrong or expired token (refresh, release), free key (status, break); stress: the verdict is not clean"},
	{"64", "usage error: bad flag, argument, duration, key or backend URL; operation not supported by the backend"},
	{"69", "store unavailable: backend cannot be opened or reached, or still unreachable when --wait ended"},
	{"70", "internal error, e.g. a corrupt lock record"},
	{"75", "not acquired: the key is held by someone else (run/acquire --conflict-exit-code N changes it)"},
	{"79", "run: the lock was lost or --max-hold reached while COMMAND ran; COMMAND was stopped"},
	{"126", "run: COMMAND found but not executable"},
	{"127", "run: COMMAND not found"},
	{"128+N", "interrupted by signal N while waiting (130 SIGINT, 143 SIGTERM); run: COMMAND killed by signal N"},
	{"other", "run: COMMAND's own exit status"},
}

func exitCodeHelp() string {
	s := "Exit status:\n"
	for _, row := range exitCodeTable {
		s += fmt.Sprintf("  %-6s %s\n", row.code, row.meaning)
	}
	return s
}
