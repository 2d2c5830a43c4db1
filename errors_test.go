package dlock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
)

func TestNotAcquiredError(t *testing.T) {
	holder := &dlock.Record{
		Key:       "jobs/nightly",
		LockID:    "0123456789abcdef",
		Fence:     7,
		ExpiresAt: time.Now().Add(time.Minute),
		Owner:     dlock.Owner{Host: "web1", PID: 4242, Label: "backup"},
	}
	tests := []struct {
		name      string
		err       *dlock.NotAcquiredError
		matches   []error
		unmatched []error
		contains  []string
	}{
		{
			name:      "contention",
			err:       &dlock.NotAcquiredError{Key: "jobs/nightly", Holder: holder},
			matches:   []error{dlock.ErrNotAcquired},
			unmatched: []error{context.Canceled, context.DeadlineExceeded, dlock.ErrNotHeld},
			contains:  []string{`"jobs/nightly"`, "0123456789abcdef", `"backup"`, "host web1", "pid 4242", "expires in"},
		},
		{
			name:      "cancelled",
			err:       &dlock.NotAcquiredError{Key: "k", Holder: holder, Cause: context.Canceled},
			matches:   []error{dlock.ErrNotAcquired, context.Canceled},
			unmatched: []error{context.DeadlineExceeded},
			contains:  []string{`"k"`, "0123456789abcdef", "context canceled"},
		},
		{
			name:      "deadline, no holder seen",
			err:       &dlock.NotAcquiredError{Key: "k", Cause: context.DeadlineExceeded},
			matches:   []error{dlock.ErrNotAcquired, context.DeadlineExceeded},
			unmatched: []error{context.Canceled},
			contains:  []string{"not acquired", "deadline exceeded"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Wrapped, as callers see it.
			err := error(tt.err)
			wrapped := errors.Join(errors.New("outer"), err)
			for _, target := range tt.matches {
				if !errors.Is(err, target) || !errors.Is(wrapped, target) {
					t.Errorf("%v does not match %v", err, target)
				}
			}
			for _, target := range tt.unmatched {
				if errors.Is(err, target) {
					t.Errorf("%v matches %v", err, target)
				}
			}
			var nae *dlock.NotAcquiredError
			if !errors.As(wrapped, &nae) || nae != tt.err {
				t.Errorf("errors.As did not find the *NotAcquiredError")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "dlock: ") {
				t.Errorf("message %q lacks the package prefix", msg)
			}
			for _, s := range tt.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
		})
	}
}

func TestSentinels(t *testing.T) {
	if !errors.Is(dlock.ErrMaxHold, dlock.ErrLockLost) {
		t.Error("ErrMaxHold does not match ErrLockLost")
	}
	if errors.Is(dlock.ErrLockLost, dlock.ErrMaxHold) {
		t.Error("ErrLockLost matches ErrMaxHold")
	}
	if !errors.Is(dlock.ErrUnsupported, errors.ErrUnsupported) {
		t.Error("ErrUnsupported does not match errors.ErrUnsupported")
	}
	all := []error{
		dlock.ErrNotAcquired, dlock.ErrNotHeld, dlock.ErrLockLost, dlock.ErrMaxHold, dlock.ErrReleased,
		dlock.ErrInvalidKey, dlock.ErrInvalidTTL, dlock.ErrInvalidOption, dlock.ErrUnavailable,
		dlock.ErrCorrupt, dlock.ErrUnsupported,
	}
	for _, err := range all {
		if msg := err.Error(); !strings.HasPrefix(msg, "dlock: ") || strings.ToLower(msg) != msg {
			t.Errorf("sentinel message %q: want lowercase with the dlock: prefix", msg)
		}
	}
}
