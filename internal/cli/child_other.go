//go:build !linux

package cli

import "os/exec"

// setDeathSignal does nothing outside Linux, which alone has a parent-death
// signal: there, a dlock killed with SIGKILL leaves its command running
// until it exits (the lock still expires within its TTL).
func setDeathSignal(*exec.Cmd) {}
