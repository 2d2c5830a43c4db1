// Package filelock is the dlock backend over a directory on one host.
package filelock

import (
	"github.com/dlock-dev/dlock"
)

// Backend stores locks as files in one directory.
type Backend struct {
	dir string
}

// Option configures a Backend.
type Option func(*Backend)

// New returns a backend over dir, creating it 0700 if missing.
func New(dir string, opts ...Option) (*Backend, error) {
	// TODO: filled in by the file-backend work
	return &Backend{dir: dir}, nil
}

// DefaultDir returns the per-user directory the CLI uses when no backend is
// given.
func DefaultDir() (string, error) { return "", nil }

var _ = dlock.ErrNotHeld
