package pglock

import (
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/jackc/pgx/v5"
)

// row is a lease as the statements' columns give it.
type row struct {
	key, lockID, host, label string
	fence, pid               int64
	ageUs, leftUs            int64 // since the grant, until the expiry
}

// dest is where Scan puts columns, in their order.
func (r *row) dest() []any {
	return []any{&r.key, &r.lockID, &r.fence, &r.host, &r.pid, &r.label, &r.ageUs, &r.leftUs}
}

// record places the row's times on this process's clock, now being when
// the reply came: the server's clock never has to agree with ours.
func (r *row) record(now time.Time) dlock.Record {
	return dlock.Record{
		Key:        r.key,
		LockID:     r.lockID,
		Fence:      uint64(r.fence),
		AcquiredAt: now.Add(-time.Duration(r.ageUs) * time.Microsecond),
		ExpiresAt:  now.Add(time.Duration(r.leftUs) * time.Microsecond),
		Owner:      dlock.Owner{Host: r.host, PID: int(r.pid), Label: r.label},
	}
}

// collect reads rows of columns, each followed by the extra columns
// (scanned and dropped).
func collect(rows pgx.Rows, extra ...any) ([]dlock.Record, error) {
	defer rows.Close()
	var recs []dlock.Record
	for rows.Next() {
		var r row
		if err := rows.Scan(append(r.dest(), extra...)...); err != nil {
			return nil, err
		}
		recs = append(recs, r.record(time.Now()))
	}
	return recs, rows.Err()
}
