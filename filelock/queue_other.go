//go:build unix && !linux && !aix

package filelock

import (
	"context"

	"github.com/dlock-dev/dlock"
)

// Outside Linux there are no open-file-description locks to hold a place
// in line with, and no Notifier to wake waiters: no FIFO queue.

type queue struct{}

type waiter struct{}

func (b *Backend) waiterFor(context.Context, dlock.AcquireRequest) (*waiter, bool) { return nil, false }

func (b *Backend) enlist(context.Context, dlock.AcquireRequest) *waiter { return nil }

func (b *Backend) leave(*waiter) {}

func (b *Backend) leaveAll() {}

func (b *Backend) leaveByToken(string) {}

func (b *Backend) join(*waiter, *lockedFile, *fileRecord) bool { return false }

func (w *waiter) unjoin() {}

func (b *Backend) mayTake(*lockedFile, *fileRecord, *waiter, instant) queueDecision {
	return queueDecision{grant: true}
}

func (b *Backend) refusal(rec dlock.Record, _ *waiter, _ *lockedFile) dlock.Record { return rec }

func queued(*lockedFile, *fileRecord) bool { return false }

func countTickets(int, uint64, uint64) int { return 0 }
