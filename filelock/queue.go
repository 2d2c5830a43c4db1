//go:build unix && !aix

package filelock

import "github.com/dlock-dev/dlock"

// queueDecision is what the queue says of a grant of a key no live lease
// holds.
type queueDecision struct {
	grant bool
	// Without grant: the key is promised to the first in line until
	// passAt, after which others may pass it.
	passAt instant
	// markFree: the free record must be written (with FreedMono) for the
	// time the key has been free to be known.
	markFree bool
}

// promised is the record reported for a key that is free but promised to
// the first in line until passAt.
func promised(key string, fence uint64, passAt instant) dlock.Record {
	return dlock.Record{Key: key, Fence: fence, ExpiresAt: passAt.wall, Owner: dlock.Owner{Label: "next in the FIFO queue"}}
}
