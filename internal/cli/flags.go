package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// durationValue is a pflag.Value for durations written as Go durations
// (500ms, 1m30s) or plain seconds (10, 2.5, as flock -w takes them).
// Negative values are refused when parsed; commands check zero themselves,
// where it matters, to give a specific message.
type durationValue struct{ d *time.Duration }

func (v *durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return "0" // which pflag recognises as "no default worth showing"
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

func (v *durationValue) Type() string { return "duration" }

var errNegative = errors.New("negative duration")

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		// >=: the bound itself rounds up in float64 and would overflow.
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) >= math.MaxInt64/float64(time.Second) {
			return 0, fmt.Errorf("%q is out of range", s)
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (use e.g. 30s, 5m or plain seconds)", s)
		}
	}
	if d < 0 {
		return 0, errNegative
	}
	return d, nil
}

// waitValue is the --wait flag: a duration, 0 for "do not wait" or
// "forever" for "until granted or interrupted" (stored as -1).
type waitValue struct{ d *time.Duration }

const waitForever time.Duration = -1

func (v *waitValue) String() string {
	switch {
	case v.d == nil || *v.d == 0:
		return "0"
	case *v.d == waitForever:
		return "forever"
	}
	return v.d.String()
}

func (v *waitValue) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "forever", "inf", "infinity":
		*v.d = waitForever
		return nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return fmt.Errorf("%w (or \"forever\")", err)
	}
	*v.d = d
	return nil
}

func (v *waitValue) Type() string { return "duration|forever" }
