package testserver

import (
	"os"
	"strconv"
	"testing"
)

// MemcachedArgs is memcached's command line for [Start]: loopback only, no
// UDP, 64 MB. memcached refuses to run as root without -u, so a test run as
// root (containers, CI images) names root explicitly.
func MemcachedArgs(port int) []string {
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	return args
}

// Memcached starts a memcached for t, or skips t if memcached is not
// installed (fails it when CI=true). The server is killed when t ends.
func Memcached(t testing.TB) *Process {
	t.Helper()
	return Start(t, Binary(t, "memcached"), MemcachedArgs)
}

// Restart starts binary again on p's port after p was stopped, for tests of
// a server that restarts where its clients expect it (with its data gone).
// It fails t if the port cannot be reused. The new server is killed when t
// ends.
func Restart(t testing.TB, p *Process, binary string, args func(port int) []string) *Process {
	t.Helper()
	p.Stop()
	np, err := start(binary, args, p.Port)
	if err != nil {
		t.Fatalf("testserver: restart %s on port %d: %v", binary, p.Port, err)
	}
	t.Cleanup(np.Stop)
	return np
}
