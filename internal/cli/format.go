package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dlock-dev/dlock"
)

// humanDuration renders d for people: 850ms, 12s, 4m10s, 3h5m, 2d4h.
func humanDuration(d time.Duration) string {
	d = d.Abs()
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 24*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	days := d / (24 * time.Hour)
	hours := (d % (24 * time.Hour)).Round(time.Hour) / time.Hour
	return fmt.Sprintf("%dd%dh", days, hours)
}

// relTime says how far t is from now: "in 12s" or "3m ago".
func relTime(t, now time.Time) string {
	d := t.Sub(now)
	if d >= 0 {
		return "in " + humanDuration(d)
	}
	return humanDuration(d) + " ago"
}

// clock renders t in local time, with the date only when it is not today.
func clock(t, now time.Time) string {
	t, now = t.Local(), now.Local()
	if t.Year() == now.Year() && t.YearDay() == now.YearDay() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

// when renders t both ways: "12:00:31 (in 25s)".
func when(t, now time.Time) string {
	if t.IsZero() {
		return "unknown"
	}
	return clock(t, now) + " (" + relTime(t, now) + ")"
}

// ownerString describes an owner as "host web1, pid 4242, "label"".
func ownerString(o dlock.Owner) string {
	var parts []string
	if o.Host != "" {
		parts = append(parts, "host "+o.Host)
	}
	if o.PID != 0 {
		parts = append(parts, fmt.Sprintf("pid %d", o.PID))
	}
	if o.Label != "" {
		parts = append(parts, fmt.Sprintf("%q", o.Label))
	}
	if len(parts) == 0 {
		return "unknown owner"
	}
	return strings.Join(parts, ", ")
}

// holderLine names the holder of a lock in one line, for conflict
// messages: lock id, host, pid, since, until.
func holderLine(rec dlock.Record, now time.Time) string {
	if rec.LockID == "" {
		// No lease: the key is free but promised to the first in a FIFO
		// queue (file backend) until it comes or may be passed.
		return fmt.Sprintf("the waiter first in its queue (its turn), until %s", when(rec.ExpiresAt, now))
	}
	return fmt.Sprintf("lock %s (%s) since %s, until %s", rec.LockID, ownerString(rec.Owner),
		when(rec.AcquiredAt, now), when(rec.ExpiresAt, now))
}

// fields prints label/value pairs with the values aligned.
func fields(w io.Writer, pairs ...[2]string) {
	width := 0
	for _, p := range pairs {
		width = max(width, len(p[0]))
	}
	for _, p := range pairs {
		fmt.Fprintf(w, "%-*s  %s\n", width+1, p[0]+":", p[1])
	}
}

// recordFields are the human lines of a lease.
func recordFields(rec dlock.Record, now time.Time) [][2]string {
	return [][2]string{
		{"lock id", rec.LockID},
		{"fence", fmt.Sprint(rec.Fence)},
		{"owner", ownerString(rec.Owner)},
		{"acquired", when(rec.AcquiredAt, now)},
		{"expires", when(rec.ExpiresAt, now)},
	}
}

// leaseJSON is the JSON of a lease, without its key (the enclosing object
// carries it). Field names follow dlock.Record's tags.
type leaseJSON struct {
	LockID     string      `json:"lock_id"`
	Fence      uint64      `json:"fence"`
	AcquiredAt time.Time   `json:"acquired_at"`
	ExpiresAt  time.Time   `json:"expires_at"`
	Owner      dlock.Owner `json:"owner"`
}

func leaseOf(rec dlock.Record) *leaseJSON {
	return &leaseJSON{LockID: rec.LockID, Fence: rec.Fence, AcquiredAt: rec.AcquiredAt, ExpiresAt: rec.ExpiresAt, Owner: rec.Owner}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("cli: write json: %w", err)
	}
	return nil
}
