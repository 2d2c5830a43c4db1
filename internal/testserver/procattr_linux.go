package testserver

import "syscall"

// procAttr puts a server in a process group of its own (Stop kills the
// group) and has the kernel kill it if the test process dies first: a test
// binary killed by go test's timeout runs no cleanup, and a server left
// running would keep a core busy for whatever still talks to it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
