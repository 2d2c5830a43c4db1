package fence_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dlock-dev/dlock/internal/fence"
)

func open(t *testing.T) *fence.Resource {
	t.Helper()
	r, err := fence.Open(filepath.Join(t.TempDir(), "resource"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestWriteAcceptsNonDecreasingFences(t *testing.T) {
	ctx := t.Context()
	r := open(t)
	steps := []struct {
		fence uint64
		ok    bool
	}{
		{3, true},
		{3, true}, // the same holder writing again
		{7, true},
		{5, false},
		{0, false},
		{7, true},
		{8, true},
	}
	var want []fence.Entry
	for i, s := range steps {
		data := []byte(fmt.Sprintf("step %d\twith\nodd bytes \x00", i))
		err := r.Write(ctx, s.fence, data)
		if s.ok {
			if err != nil {
				t.Fatalf("step %d: Write(%d) = %v, want accepted", i, s.fence, err)
			}
			want = append(want, fence.Entry{Fence: s.fence, Data: data})
			continue
		}
		var stale *fence.StaleFenceError
		if !errors.Is(err, fence.ErrStaleFence) || !errors.As(err, &stale) {
			t.Fatalf("step %d: Write(%d) = %v, want ErrStaleFence", i, s.fence, err)
		}
		if stale.Fence != s.fence || stale.Highest != 7 {
			t.Errorf("step %d: error = %+v, want fence %d highest 7", i, stale, s.fence)
		}
	}
	got, err := r.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Entries = %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Fence != want[i].Fence || string(got[i].Data) != string(want[i].Data) {
			t.Errorf("entry %d = %d %q, want %d %q", i, got[i].Fence, got[i].Data, want[i].Fence, want[i].Data)
		}
	}
	if h, err := r.Highest(ctx); err != nil || h != 8 {
		t.Errorf("Highest = %d, %v; want 8", h, err)
	}
}

func TestReopenKeepsHighest(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "resource")
	r, err := fence.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := r.Highest(ctx); err != nil || h != 0 {
		t.Fatalf("Highest of a new resource = %d, %v; want 0", h, err)
	}
	if err := r.Write(ctx, 12, []byte("x")); err != nil {
		t.Fatal(err)
	}
	r2, err := fence.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Write(ctx, 11, []byte("late")); !errors.Is(err, fence.ErrStaleFence) {
		t.Errorf("Write(11) after 12 through another handle = %v, want ErrStaleFence", err)
	}
}

// TestConcurrentWriters checks that the check and the append are one step:
// writers with increasing fences racing with stale ones never leave an
// entry below an earlier one.
func TestConcurrentWriters(t *testing.T) {
	ctx := t.Context()
	r := open(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				f := uint64(i*8 + g)
				if err := r.Write(ctx, f, []byte("w")); err != nil && !errors.Is(err, fence.ErrStaleFence) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	entries, err := r.Entries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("no entries accepted")
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Fence < entries[i-1].Fence {
			t.Fatalf("entry %d has fence %d after %d", i, entries[i].Fence, entries[i-1].Fence)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	r := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.Write(ctx, 1, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write with a cancelled context = %v, want context.Canceled", err)
	}
	if h, err := r.Highest(t.Context()); err != nil || h != 0 {
		t.Errorf("Highest after the cancelled write = %d, %v; want 0", h, err)
	}
}
