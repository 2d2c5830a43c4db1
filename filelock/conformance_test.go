package filelock_test

import (
	"errors"
	"runtime"
	"testing"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/filelock"
)

func TestConformance(t *testing.T) {
	// The FIFO queue needs Linux (open-file-description locks, inotify).
	cfg := dlocktest.Config{FIFO: runtime.GOOS == "linux"}
	dlocktest.RunConfig(t, cfg, func(t *testing.T) dlock.Backend {
		b, err := filelock.New(t.TempDir())
		if errors.Is(err, errors.ErrUnsupported) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}
