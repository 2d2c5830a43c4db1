package dlocktest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
	"github.com/dlock-dev/dlock/memlock"
)

// A mutant is memlock with one deliberate bug, and the subtests of the
// suite that must catch it. If the suite passed a mutant, its tests would
// be asserting too little.
type mutant struct {
	name   string
	catch  []string // subtest names, as `go test` prints them
	wrap   func(*memlock.Backend) dlock.Backend
	reason string
}

var mutants = []mutant{
	{
		name:   "grants-held-keys",
		reason: "Acquire takes over a live lease",
		catch:  []string{"mutual_exclusion", "try-acquire_of_a_held_key_names_the_holder"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return grantsHeld{m} },
	},
	{
		name:   "blind-release",
		reason: "Release deletes whatever the token",
		catch:  []string{"release_needs_the_token", "release_after_takeover_keeps_the_new_holder"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return blindRelease{m} },
	},
	{
		name:   "constant-fence",
		reason: "every grant has fence 1",
		catch:  []string{"fence_grows", "expiry_frees_the_key"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return constantFence{m} },
	},
	{
		name:   "leaks-token",
		reason: "the holder's token is shown in its record",
		catch:  []string{"try-acquire_of_a_held_key_names_the_holder"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return &leaksToken{Backend: m} },
	},
	{
		name:   "silent-notifier",
		reason: "Subscribe never wakes anyone",
		catch:  []string{"waiter_is_woken_by_release"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return silentNotifier{m} },
	},
	{
		name:   "cleanup-removes-live",
		reason: "Cleanup breaks live leases",
		catch:  []string{"cleanup"},
		wrap:   func(m *memlock.Backend) dlock.Backend { return greedyCleanup{m} },
	},
}

// TestSuiteCatchesMutants runs the suite's relevant subtests against each
// mutant in a child process (a failing subtest cannot be contained in this
// one) and checks that they fail.
func TestSuiteCatchesMutants(t *testing.T) {
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			run := "^TestMutant$/^(" + strings.Join(m.catch, "|") + ")$"
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "DLOCKTEST_MUTANT="+m.name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed a backend where %s (err %v):\n%s", m.reason, err, out)
			}
			for _, name := range m.catch {
				if !bytes.Contains(out, []byte("--- FAIL: TestMutant/"+name+" ")) {
					t.Errorf("subtest %s did not catch that %s:\n%s", name, m.reason, out)
				}
			}
		})
	}
}

// TestMutant is the child side of TestSuiteCatchesMutants.
func TestMutant(t *testing.T) {
	name := os.Getenv("DLOCKTEST_MUTANT")
	if name == "" {
		t.Skip("runs only as a child of TestSuiteCatchesMutants")
	}
	for _, m := range mutants {
		if m.name == name {
			dlocktest.Run(t, func(t *testing.T) dlock.Backend { return m.wrap(memlock.New()) })
			return
		}
	}
	t.Fatalf("no mutant %q", name)
}

type grantsHeld struct{ *memlock.Backend }

func (b grantsHeld) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	_, _, _ = b.Break(ctx, req.Key)
	return b.Backend.Acquire(ctx, req)
}

type blindRelease struct{ *memlock.Backend }

func (b blindRelease) Release(ctx context.Context, key, _ string) error {
	_, found, err := b.Break(ctx, key)
	if err == nil && !found {
		return dlock.ErrNotHeld
	}
	return err
}

type constantFence struct{ *memlock.Backend }

func (b constantFence) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := b.Backend.Acquire(ctx, req)
	rec.Fence = 1
	return rec, granted, err
}

type leaksToken struct {
	*memlock.Backend
	tokens sync.Map // key -> token of the last grant
}

func (b *leaksToken) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	rec, granted, err := b.Backend.Acquire(ctx, req)
	if granted {
		b.tokens.Store(req.Key, req.Token)
	} else if tok, ok := b.tokens.Load(req.Key); ok {
		rec.Owner.Label += " token=" + tok.(string)
	}
	return rec, granted, err
}

type silentNotifier struct{ *memlock.Backend }

func (silentNotifier) Subscribe(context.Context, string) (<-chan struct{}, func(), error) {
	return make(chan struct{}), func() {}, nil
}

type greedyCleanup struct{ *memlock.Backend }

func (b greedyCleanup) Cleanup(ctx context.Context) (int, error) {
	n, err := b.Backend.Cleanup(ctx)
	recs, _ := b.List(ctx, "")
	for _, r := range recs {
		if time.Until(r.ExpiresAt) > 0 {
			_, _, _ = b.Break(ctx, r.Key)
			n++
		}
	}
	return n, err
}
