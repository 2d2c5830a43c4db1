package dlock_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/dlocktest"
)

func TestInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  dlock.Option
		want error
	}{
		{"negative max wait", dlock.WithMaxWait(-time.Second), dlock.ErrInvalidOption},
		{"negative max hold", dlock.WithMaxHold(-time.Second), dlock.ErrInvalidOption},
		{"negative min hold", dlock.WithMinHold(-time.Second), dlock.ErrInvalidOption},
		{"min hold above max ttl", dlock.WithMinHold(dlock.MaxTTL + 1), dlock.ErrInvalidOption},
		{"nil retry", dlock.WithRetry(nil), dlock.ErrInvalidOption},
		{"zero refresh interval", dlock.WithRefreshInterval(0), dlock.ErrInvalidOption},
		{"negative refresh interval", dlock.WithRefreshInterval(-time.Second), dlock.ErrInvalidOption},
		{"zero ttl", dlock.WithTTL(0), dlock.ErrInvalidTTL},
		{"ttl above max", dlock.WithTTL(dlock.MaxTTL + 1), dlock.ErrInvalidTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			c, f, _ := newFaulty(t)
			key := uniqueKey(t)
			calls := map[string]func() error{
				"TryAcquire": func() error { _, err := c.TryAcquire(ctx, key, tt.opt); return err },
				"Acquire":    func() error { _, err := c.Acquire(ctx, key, tt.opt); return err },
				"Do": func() error {
					return c.Do(ctx, key, func(context.Context) error {
						t.Error("Do ran fn despite an invalid option")
						return nil
					}, tt.opt)
				},
				"client default": func() error {
					_, err := dlock.New(f, tt.opt).TryAcquire(ctx, key)
					return err
				},
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, tt.want) {
					t.Errorf("%s: %v, want %v", name, err, tt.want)
				}
			}
			if n := f.Calls(dlocktest.OpAcquire); n != 0 {
				t.Errorf("the backend was asked %d times despite the invalid option", n)
			}
		})
	}
}

func TestOwnerOptions(t *testing.T) {
	ctx := t.Context()
	c, _, mem := newFaulty(t, dlock.WithLabel("default label"))
	host, _ := os.Hostname()

	l := mustTry(t, c, uniqueKey(t))
	if got, want := l.Record().Owner, (dlock.Owner{Host: host, PID: os.Getpid(), Label: "default label"}); got != want {
		t.Errorf("default owner = %+v, want %+v", got, want)
	}
	l = mustTry(t, c, uniqueKey(t), dlock.WithLabel("per call"))
	if got := l.Record().Owner; got.Label != "per call" || got.PID != os.Getpid() {
		t.Errorf("owner with a per-call label = %+v", got)
	}
	owner := dlock.Owner{Host: "elsewhere", Label: "cron"}
	l = mustTry(t, c, uniqueKey(t), dlock.WithOwner(owner))
	rec, _, err := mem.Inspect(ctx, l.Key())
	if err != nil || rec.Owner != owner {
		t.Errorf("stored owner = %+v, %v; want %+v", rec.Owner, err, owner)
	}
}

func TestTTLOption(t *testing.T) {
	c, _, mem := newFaulty(t, dlock.WithTTL(time.Hour))
	for _, tc := range []struct {
		opts []dlock.Option
		want time.Duration
	}{
		{nil, time.Hour},
		{[]dlock.Option{dlock.WithTTL(time.Minute)}, time.Minute},
	} {
		l := mustTry(t, c, uniqueKey(t), tc.opts...)
		rec, _, err := mem.Inspect(t.Context(), l.Key())
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.ExpiresAt.Sub(rec.AcquiredAt); got != tc.want {
			t.Errorf("lease length = %v, want %v", got, tc.want)
		}
	}
}
