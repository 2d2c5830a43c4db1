//go:build !unix

package cli

// installWaitHook is used only by the real-process tests, which need unix.
func installWaitHook(string) {}
