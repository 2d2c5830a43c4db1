//go:build !unix

package fence

import (
	"context"
	"errors"
	"fmt"
	"os"
)

const (
	lockEx = 2
	lockSh = 1
)

// lock is unsupported without flock.
func (r *Resource) lock(context.Context, int) (*os.File, error) {
	return nil, fmt.Errorf("fence: %w on this platform", errors.ErrUnsupported)
}
