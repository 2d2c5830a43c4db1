//go:build unix

package cli

import (
	"fmt"
	"os"
	"syscall"
)

// installWaitHook makes dlock write "waiting" to the inherited descriptor
// fd when it starts waiting for a lock.
func installWaitHook(fd string) {
	var n int
	if _, err := fmt.Sscan(fd, &n); err != nil {
		return
	}
	syscall.CloseOnExec(n) // not for dlock's own child
	f := os.NewFile(uintptr(n), "hook")
	testHookWaiting = func() { fmt.Fprintln(f, "waiting") }
}
