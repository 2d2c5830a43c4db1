package cli

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel SIGKILL the child when the thread that
// started it dies, which [startChild] ties to the dlock process: a dlock
// killed with SIGKILL must not leave its command running unguarded while
// the lock passes to someone else.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
