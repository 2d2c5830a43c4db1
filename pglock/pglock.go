package pglock

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/puddle/v2"
)

// DefaultTable is the table of leases unless [WithTable] names another.
const DefaultTable = "dlock_locks"

// DefaultTimeout bounds each operation whose context has no earlier
// deadline unless [WithTimeout] sets another.
const DefaultTimeout = 5 * time.Second

// Option configures a [Backend].
type Option func(*options)

type options struct {
	table   string
	timeout time.Duration
	errs    []error
}

// validTable reports whether WithTable accepts name: a plain identifier,
// optionally schema-qualified, short enough that the names derived from
// it (the sequence, the void table, the channel) stay within
// PostgreSQL's 63 bytes. (Not a regexp: compiling one at start-up would
// slow every dlock process.)
func validTable(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 30 || (p[0] >= '0' && p[0] <= '9') {
			return false
		}
		for _, c := range []byte(p) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
				return false
			}
		}
	}
	return true
}

// WithTable sets the table of leases (default [DefaultTable]), optionally
// with a schema ("locks.dlock"). Beside it the backend keeps a sequence
// (the table's name + "_fence") and a table of void tokens (+ "_void").
// Clients that share locks must use the same table; different tables are
// separate namespaces. A name that is not lower-case letters, digits and
// underscores, of at most 30 bytes per part, makes [New] fail with
// [dlock.ErrInvalidOption].
func WithTable(name string) Option {
	return func(o *options) {
		if !validTable(name) {
			o.errs = append(o.errs, fmt.Errorf("table %q is not [schema.]name of lower-case letters, digits and _ (at most 30 each)", name))
			return
		}
		o.table = name
	}
}

// WithTimeout bounds each operation whose context has no earlier deadline
// (default [DefaultTimeout]); when the bound passes the operation fails
// with [dlock.ErrUnavailable]. A pool whose server is down waits for a
// connection until its context ends, so without a bound an operation
// could wait forever. A timeout that is not positive makes [New] fail with
// [dlock.ErrInvalidOption].
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.errs = append(o.errs, fmt.Errorf("timeout %v is not positive", d))
			return
		}
		o.timeout = d
	}
}

// Backend is a dlock backend over a PostgreSQL database. It is safe for
// concurrent use. See the package doc for how it stores leases.
type Backend struct {
	pool    *pgxpool.Pool
	timeout time.Duration
	sql     statements
	channel string // of the NOTIFY that wakes waiters; the payload is the key
	setup   string // the advisory lock's key that serializes setup

	setupMu sync.Mutex // one setup at a time in this process

	notify *listener
	waiter string // this backend's name among a key's waiters
}

// New returns a backend over pool, which stays the caller's: [Backend.Close]
// does not close it. It does not connect; the first operation creates the
// table if it is missing (or call [Backend.Setup]). Errors wrap
// [dlock.ErrInvalidOption].
func New(pool *pgxpool.Pool, opts ...Option) (*Backend, error) {
	o := options{table: DefaultTable, timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if pool == nil {
		o.errs = append(o.errs, errors.New("nil pool"))
	}
	if err := errors.Join(o.errs...); err != nil {
		return nil, fmt.Errorf("pglock: %w: %w", dlock.ErrInvalidOption, err)
	}
	b := &Backend{
		pool:    pool,
		timeout: o.timeout,
		sql:     newStatements(quote(o.table), quote(o.table+"_fence"), quote(o.table+"_void"), quote(o.table+"_waiters")),
		channel: "dlock:" + o.table,
		setup:   "dlock:" + o.table,
	}
	var name [8]byte
	_, _ = rand.Read(name[:])
	b.waiter = hex.EncodeToString(name[:])
	b.notify = newListener(b)
	return b, nil
}

// quote quotes a [schema.]name that tableName accepted.
func quote(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

// Close stops the connection that listens for releases, if waiting
// started one, and waits for it. It does not close the pool. After Close,
// an Acquire that would wait fails with [dlock.ErrClosed] (which matches
// [dlock.ErrUnavailable]); other operations still work. Calls through a
// closed pool fail with ErrClosed too.
func (b *Backend) Close() error {
	b.notify.close()
	return nil
}

// Setup creates the table, its sequence and its table of void tokens if
// they are missing. Operations call it on their own when the table is
// missing; call it at deployment when the role that locks may not create
// tables, with a role that may.
func (b *Backend) Setup(ctx context.Context) error {
	return b.call(ctx, "setup", "", func(ctx context.Context) error {
		return b.create(ctx)
	})
}

func (b *Backend) create(ctx context.Context) error {
	b.setupMu.Lock()
	defer b.setupMu.Unlock()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, b.setup); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, b.sql.setup); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// call runs fn with each attempt bounded by the backend's timeout, creating
// the table and running fn again if it was missing, running it again after
// a serialization failure, and waiting for a connection slot on a full
// server for up to the backend's timeout. It maps the error: the caller's
// own context error is returned as is (wrapped), the backend's timeout,
// a full server and transport failures wrap dlock.ErrUnavailable.
func (b *Backend) call(ctx context.Context, op, key string, fn func(ctx context.Context) error) error {
	return b.callWaiting(ctx, op, key, b.timeout, fn)
}

// errNoSlot marks a server that had no free connection slot for as long as
// an operation would wait for one.
var errNoSlot = errors.New("no free connection slot")

// callWaiting is call, waiting at most slotWait for a connection slot.
func (b *Backend) callWaiting(ctx context.Context, op, key string, slotWait time.Duration, fn func(ctx context.Context) error) error {
	attempt := func() error {
		cctx, cancel := context.WithTimeout(ctx, b.timeout)
		defer cancel()
		err := fn(cctx)
		if busy(err) {
			b.notify.yield()
		} else {
			b.notify.feed()
		}
		return err
	}
	err := attempt()
	slotCtx, cancel := context.WithTimeout(ctx, slotWait)
	defer cancel()
	wait, created, retries := 5*time.Millisecond, false, 0
	for err != nil {
		if missingTable(err) && !created {
			cctx, cancel := context.WithTimeout(ctx, b.timeout)
			err = b.create(cctx)
			cancel()
			if err == nil {
				created = true
				err = attempt()
			}
			continue
		}
		if busy(err) {
			// Nothing was sent: wait for a connection slot.
			t := time.NewTimer(wait)
			select {
			case <-slotCtx.Done():
				t.Stop()
				return b.fail(ctx, op, key, fmt.Errorf("%w: %w", errNoSlot, err))
			case <-t.C:
			}
			wait = min(2*wait, 200*time.Millisecond)
		} else if retries++; !retryable(err) || retries > 3 {
			return b.fail(ctx, op, key, err)
		}
		err = attempt()
	}
	return nil
}

// busy reports a server that refused a connection for now: all its
// connection slots are taken (53300, as when many dlock processes start
// at once), or it is starting up or shutting down (57P03). The request
// was not sent, so it can be sent again.
func busy(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "53300" || pe.Code == "57P03")
}

// missingTable reports an error for a relation that does not exist: the
// backend's table or sequence, before Setup.
func missingTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// retryable reports a transaction rolled back for serialization or a
// deadlock (class 40): possible when the database's default isolation is
// stricter than read committed; the statement can simply run again, a
// few times.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "40")
}

func (b *Backend) fail(ctx context.Context, op, key string, err error) error {
	what := op
	if key != "" {
		what = fmt.Sprintf("%s %q", op, key)
	}
	var pe *pgconn.PgError
	switch {
	case ctx.Err() != nil && busy(err):
		return fmt.Errorf("pglock: %s: %w (%v)", what, context.Cause(ctx), err)
	case ctx.Err() != nil:
		return fmt.Errorf("pglock: %s: %w", what, context.Cause(ctx))
	case errors.Is(err, dlock.ErrCorrupt), errors.Is(err, dlock.ErrNotHeld), errors.Is(err, dlock.ErrUnavailable):
		return fmt.Errorf("pglock: %s: %w", what, err)
	case errors.Is(err, puddle.ErrClosedPool):
		return fmt.Errorf("pglock: %s: %w: %w", what, dlock.ErrClosed, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("pglock: %s: %w: no answer from PostgreSQL within %v", what, dlock.ErrUnavailable, b.timeout)
	case errors.Is(err, errNoSlot):
		return fmt.Errorf("pglock: %s: %w: %w", what, dlock.ErrUnavailable, err)
	case errors.As(err, &pe):
		// The server answered with an error (no privilege, read-only
		// standby, ...): the store cannot serve the request as it is.
		return fmt.Errorf("pglock: %s: %w: %s (SQLSTATE %s)", what, dlock.ErrUnavailable, pe.Message, pe.Code)
	}
	return fmt.Errorf("pglock: %s: %w: %w", what, dlock.ErrUnavailable, err)
}

// hash is what the table keeps of a token: its SHA-256, so that reading the
// table does not give the power to release or refresh a lock.
func hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// micros is d in whole microseconds, the unit the statements take.
func micros(d time.Duration) int64 { return d.Microseconds() }

// Acquire implements [dlock.Backend]. See the package doc.
func (b *Backend) Acquire(ctx context.Context, req dlock.AcquireRequest) (dlock.Record, bool, error) {
	id, waiting := dlock.WaitingLockID(ctx)
	waiting = waiting && id == req.LockID
	if waiting {
		// Catch releases from the moment the request is sent, so that
		// Subscribe after a refusal misses none.
		b.notify.arm(req.Key, req.LockID)
	}
	// Whether other waiters of the key wait here decides whether a grant
	// keeps this backend among the key's waiters; a backend whose
	// listening connection gave its slot up hears no release, so it does
	// not stay among them.
	var w waiterState
	if waiting {
		w.entered, w.others, w.hearing = b.notify.waiterState(req.Key, req.LockID)
	}
	sent := time.Now()
	var (
		rec     dlock.Record
		granted bool
	)
	// A grant's validity runs from before the request, so waiting long for
	// a connection slot would grant a lease already nearly over: wait at
	// most half the TTL.
	err := b.callWaiting(ctx, "acquire", req.Key, min(b.timeout, req.TTL/2), func(ctx context.Context) error {
		var err error
		rec, granted, err = b.acquire(ctx, req, waiting, w)
		return err
	})
	// Refused by the statement, a waiter puts its backend among the key's
	// waiters; granted, it takes it out unless others wait here.
	entered := waiting && w.hearing && err == nil && !granted
	left := waiting && (!w.hearing || granted && !w.others)
	if waiting && errors.Is(err, errNoSlot) && ctx.Err() == nil {
		// A waiter waits on: it looks again soon, with a fresh start for
		// its validity.
		err, rec = nil, dlock.Record{Key: req.Key, ExpiresAt: time.Now().Add(slotPause)}
	}
	if waiting {
		b.notify.settle(req.LockID, err == nil && !granted, entered, left)
	}
	if err != nil || !granted {
		return rec, false, err
	}
	rec.Key, rec.LockID, rec.Owner = req.Key, req.LockID, req.Owner
	rec.AcquiredAt, rec.ExpiresAt = sent, sent.Add(req.TTL)
	return rec, true, nil
}

// leave takes this backend out of key's waiters once its last waiter of
// the key gave up. Best effort: a backend left there is named by releases
// only until its grace passes, and the second backend a release names
// looks too.
func (b *Backend) leave(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	_, _ = b.pool.Exec(ctx, b.sql.leave, key, b.waiter)
}

// slotPause is how long a waiting acquire that found the server full waits
// before it asks again.
const slotPause = 100 * time.Millisecond

// acquireTries bounds how often acquire asks again when the refusal's
// snapshot missed the holder's row.
const acquireTries = 5

// waiterState is a waiting acquire's view of its backend (see
// listener.waiterState).
type waiterState struct{ entered, others, hearing bool }

func (b *Backend) acquire(ctx context.Context, req dlock.AcquireRequest, waiting bool, w waiterState) (dlock.Record, bool, error) {
	token := hash(req.Token)
	statement, args := b.sql.acquire, []any{req.Key, token, req.LockID, micros(req.TTL),
		req.Owner.Host, int64(req.Owner.PID), req.Owner.Label}
	asWaiter := func() {
		statement, args = b.sql.acquireWaiting, append(args, b.waiter, w.others, w.hearing)
	}
	// A waiter asks as one, which costs the server more, only once this
	// backend is among the key's waiters or the key was refused to it (and
	// it can hear releases): a free key is taken by the plain statement.
	if waiting && w.entered {
		asWaiter()
	}
	for try := 1; ; try++ {
		var state int
		var r row
		err := b.underKeyLock(ctx, b.sql.keyLockUnlessHeld, req.Key, statement, args, append([]any{&state}, r.dest()...)...)
		if err != nil {
			return dlock.Record{}, false, err
		}
		switch {
		case state == 1:
			return dlock.Record{Fence: uint64(r.fence)}, true, nil
		case state == 3:
			// Only a caller that already gave up on this token sees this.
			return dlock.Record{}, false, fmt.Errorf("%w: token already released", dlock.ErrNotAcquired)
		case waiting && w.hearing && statement == b.sql.acquire && (state == 2 && r.leftUs > 0 || try >= acquireTries):
			// Refused: ask again as a waiter, which enters the key's
			// waiters.
			asWaiter()
			continue
		case state == 2 && r.leftUs > 0, try >= acquireTries:
			// The holder; after the last try, whatever the snapshot showed
			// (a waiter then looks again at once, or in a second).
			return r.record(time.Now()), false, nil
		}
		// The snapshot showed no live holder, yet the key was not granted:
		// a lease committed while the statement ran. Ask again.
	}
}

// Refresh implements [dlock.Backend].
func (b *Backend) Refresh(ctx context.Context, key, token string, ttl time.Duration) (dlock.Record, error) {
	var rec dlock.Record
	err := b.call(ctx, "refresh", key, func(ctx context.Context) error {
		rows, err := b.pool.Query(ctx, b.sql.refresh, key, hash(token), micros(ttl), b.channel)
		if err != nil {
			return err
		}
		recs, err := collect(rows, new(int64))
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return dlock.ErrNotHeld
		}
		rec = recs[0]
		return nil
	})
	return rec, err
}

// Release implements [dlock.Backend].
func (b *Backend) Release(ctx context.Context, key, token string) error {
	return b.call(ctx, "release", key, func(ctx context.Context) error {
		var freed, woke int64
		args := []any{key, hash(token), b.channel}
		if err := b.pool.QueryRow(ctx, b.sql.release, args...).Scan(&freed, &woke); err != nil {
			return err
		}
		if freed == 1 {
			return nil
		}
		// Nothing to free: the lease is gone, or this token's acquire is
		// still running (its caller gave up on it). Under the key's lock,
		// free the grant if that acquire has committed it meanwhile, or
		// mark the token void so that it will be refused.
		if err := b.underKeyLock(ctx, b.sql.keyLock, key, b.sql.releaseOrVoid, args, &freed, &woke); err != nil {
			return err
		}
		if freed == 0 {
			return dlock.ErrNotHeld
		}
		return nil
	})
}

// underKeyLock runs statement after lock (keyLock or keyLockUnlessHeld),
// in one transaction, and scans its one row into dest. Both go in one
// round trip: pgx sends a batch as a pipeline, which the server runs as one
// implicit transaction, each statement reading as of its own start.
func (b *Backend) underKeyLock(ctx context.Context, lock, key, statement string, args []any, dest ...any) error {
	batch := &pgx.Batch{}
	batch.Queue(lock, key)
	batch.Queue(statement, args...)
	br := b.pool.SendBatch(ctx, batch)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(dest...)
	}
	// Close ends the transaction: its error means nothing was committed.
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// Inspect implements [dlock.Backend].
func (b *Backend) Inspect(ctx context.Context, key string) (dlock.Record, bool, error) {
	var recs []dlock.Record
	err := b.call(ctx, "inspect", key, func(ctx context.Context) error {
		rows, err := b.pool.Query(ctx, b.sql.inspect, key)
		if err != nil {
			return err
		}
		recs, err = collect(rows)
		return err
	})
	if err != nil || len(recs) == 0 {
		return dlock.Record{}, false, err
	}
	return recs[0], true, nil
}

// Subscribe implements [dlock.Notifier]: waiters are woken by a NOTIFY
// from the release, break, cleanup or shortening refresh of their key.
func (b *Backend) Subscribe(ctx context.Context, key string) (<-chan struct{}, func(), error) {
	id, _ := dlock.WaitingLockID(ctx)
	ch, cancel, err := b.notify.subscribe(key, id)
	if err != nil {
		return nil, nil, fmt.Errorf("pglock: subscribe %q: %w", key, err)
	}
	return ch, cancel, nil
}

var (
	_ dlock.Backend       = (*Backend)(nil)
	_ dlock.Lister        = (*Backend)(nil)
	_ dlock.StatsReporter = (*Backend)(nil)
	_ dlock.Cleaner       = (*Backend)(nil)
	_ dlock.Breaker       = (*Backend)(nil)
	_ dlock.Notifier      = (*Backend)(nil)
)
