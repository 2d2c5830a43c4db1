package dlock

import (
	"fmt"
	"strings"
	"time"
)

// Owner describes who holds a lock, for people and for the file backend's
// dead-holder check. It is informational: the token, not the owner, proves
// ownership.
type Owner struct {
	Host string `json:"host,omitempty"`
	// PID is the holding process, 0 when the lock is not tied to one process
	// (for example a lock taken by a shell script through the CLI).
	PID   int    `json:"pid,omitempty"`
	Label string `json:"label,omitempty"`
}

func (o Owner) String() string {
	var parts []string
	if o.Label != "" {
		parts = append(parts, fmt.Sprintf("%q", o.Label))
	}
	if o.Host != "" {
		parts = append(parts, "host "+o.Host)
	}
	if o.PID != 0 {
		parts = append(parts, fmt.Sprintf("pid %d", o.PID))
	}
	return strings.Join(parts, " ")
}

// Record is the public state of a granted lock as the store keeps it. It
// never contains the token; LockID is a short public id derived from it.
type Record struct {
	Key        string    `json:"key"`
	LockID     string    `json:"lock_id"`
	Fence      uint64    `json:"fence"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Owner      Owner     `json:"owner"`

	// NextLook, on a record a backend returns to a waiting Acquire it
	// refused, is when that waiter should look again if its [Notifier]
	// has not woken it sooner. Zero means at ExpiresAt. A backend sets it
	// later when its notifications cover the holder's expiry for this
	// waiter (redislock's FIFO queue: only the next in line watches the
	// holder's lease).
	NextLook time.Time `json:"-"`
}

// describe renders the holder for error messages and CLI lines.
func (r Record) describe(now time.Time) string {
	s := "lock " + r.LockID
	if r.LockID == "" {
		s = "a waiter" // a key promised to the first in a FIFO queue
	}
	if o := r.Owner.String(); o != "" {
		s += " (" + o + ")"
	}
	if !r.ExpiresAt.IsZero() {
		s += fmt.Sprintf(", expires in %s", r.ExpiresAt.Sub(now).Round(time.Millisecond))
	}
	return s
}

// Stats counts lock records. Total = Active + Expired; Held is what this
// client holds now.
type Stats struct {
	Total   int `json:"total_locks"`
	Active  int `json:"active_locks"`
	Expired int `json:"expired_locks"`
	Held    int `json:"instance_locks"`
}
