//go:build !unix || aix

package filelock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-dev/dlock"
)

// Backend stores locks as files in one directory. On this platform it is
// not available: [New] returns an error wrapping errors.ErrUnsupported.
type Backend struct{}

var errUnsupported = fmt.Errorf("filelock: %w on this platform", errors.ErrUnsupported)

// New returns an error wrapping errors.ErrUnsupported on this platform.
func New(dir string, opts ...Option) (*Backend, error) { return nil, errUnsupported }

// Dir returns "" on this platform.
func (b *Backend) Dir() string { return "" }

// Close does nothing on this platform.
func (b *Backend) Close() error { return nil }

// Acquire implements [dlock.Backend]; it is unsupported on this platform.
func (b *Backend) Acquire(context.Context, dlock.AcquireRequest) (dlock.Record, bool, error) {
	return dlock.Record{}, false, errUnsupported
}

// Refresh implements [dlock.Backend]; it is unsupported on this platform.
func (b *Backend) Refresh(context.Context, string, string, time.Duration) (dlock.Record, error) {
	return dlock.Record{}, errUnsupported
}

// Keep implements [dlock.Keeper]; it is unsupported on this platform.
func (b *Backend) Keep(context.Context, string, string, time.Duration) error { return errUnsupported }

// Release implements [dlock.Backend]; it is unsupported on this platform.
func (b *Backend) Release(context.Context, string, string) error { return errUnsupported }

// Inspect implements [dlock.Backend]; it is unsupported on this platform.
func (b *Backend) Inspect(context.Context, string) (dlock.Record, bool, error) {
	return dlock.Record{}, false, errUnsupported
}

func checkPrivateDir(string) error { return nil }
