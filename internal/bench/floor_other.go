//go:build !unix || aix

package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// FileFloor is not available here: the file backend runs on Unix only.
func FileFloor(ctx context.Context, dir string, d time.Duration) (Floor, error) {
	return Floor{}, fmt.Errorf("bench: file floor: %w", errors.ErrUnsupported)
}
