//go:build !linux

package testserver

import "syscall"

// procAttr puts a server in a process group of its own (Stop kills the
// group).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
