package pglock

import "fmt"

// statements are the SQL of one backend, built once from its table's
// names. Each is a single statement, so PostgreSQL runs it atomically; the
// ones that may grant a key or mark a token void run after keyLock, in the
// same transaction and the same round trip (see Backend.underKeyLock).
// pgx prepares each on a connection the first time it runs there and
// reuses it after.
type statements struct {
	setup, keyLock, keyLockUnlessHeld, acquire, acquireWaiting, leave, refresh, release, releaseOrVoid, inspect, list, stats, cleanup, breakLock string
}

// columns is the public part of a row as the scan in record.go reads it:
// times come as microseconds since the grant and until the expiry on the
// server's clock, so that no client clock has to agree with it.
const columns = `key, lock_id, fence, host, pid, label,
  (extract(epoch FROM now_ - acquired_at) * 1000000)::bigint,
  (extract(epoch FROM expires_at - now_) * 1000000)::bigint`

// newStatements fills in the statements for table, its fence sequence,
// its void table and its waiters table (quoted, maybe schema-qualified).
func newStatements(table, fence, void, waiters string) statements {
	// t is the table as l beside the server's time as now_, for columns:
	// read once, since a volatile function in a subquery of the table
	// would keep its index from being used.
	t := table + ` l, (SELECT clock_timestamp() AS now_) n`
	return statements{
		// setup creates what the backend needs, under an advisory lock:
		// concurrent CREATE ... IF NOT EXISTS can fail on a catalog race.
		// key is in the "C" collation so that keys sort and compare as
		// bytes, as dlock's List promises. token is the SHA-256 of the
		// holder's token, never the token.
		setup: fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
  key         text COLLATE "C" PRIMARY KEY,
  token       bytea       NOT NULL,
  lock_id     text        NOT NULL,
  fence       bigint      NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  host        text        NOT NULL,
  pid         bigint      NOT NULL,
  label       text        NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS %[2]s AS bigint;
CREATE TABLE IF NOT EXISTS %[3]s (
  token bytea       PRIMARY KEY,
  until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS %[4]s (
  key    text COLLATE "C" NOT NULL,
  waiter text        NOT NULL,
  since  timestamptz NOT NULL,
  until  timestamptz NOT NULL,
  PRIMARY KEY (key, waiter)
)`, table, fence, void, waiters),

		// keyLock: $1 key. The key's transaction-scoped advisory lock.
		// Every statement that may grant the key or mark a token of it
		// void runs after it, as a statement of its own in the same
		// transaction, so that it reads the rows committed before it got
		// the lock (a statement reads as of its start, and a lock taken
		// inside it would leave it reading as of before the wait):
		//   - The fence is drawn under it. Without it, an acquire that
		//     drew its fence and then stalled could insert it after a
		//     later grant of the key had come and gone, and the fence
		//     would go down.
		//   - An acquire that lands after the release of its token (its
		//     caller gave up while it ran) sees the void mark; a release
		//     that lands after the acquire sees the grant and frees it.
		//     A void mark written without the lock, or an acquire that
		//     read before waiting for it, let such an acquire take the
		//     key for nobody until its TTL (TestReleaseDuringAcquire).
		keyLock: fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, hashtext($1))`, lockClass),
		// keyLockUnlessHeld: $1 key. keyLock for an acquire, unless the
		// key has a live lease: such an acquire can only be refused, and
		// its refusal need not queue behind the acquires that may take the
		// key (waiters that look cost grants nothing). It records that it
		// took the lock in a transaction-local setting, and the acquire
		// grants only under it.
		keyLockUnlessHeld: fmt.Sprintf(`
SELECT pg_advisory_xact_lock(%d, hashtext($1)), set_config('%s', $1, true)
WHERE NOT EXISTS (SELECT 1 FROM %s WHERE key = $1 AND expires_at > clock_timestamp())`, lockClass, lockedSetting, table),

		// acquire: $1 key, $2 token hash, $3 lock id, $4 TTL µs, $5 host,
		// $6 pid, $7 label. It inserts the lease if the key has no row
		// (ins), or takes over the row of an expired lease (upd), unless
		// the token is void (released while this request was in flight).
		// The update checks expiry again on the row's newest version, so a
		// live lease is never replaced. A refusal changes and locks no
		// row, so it commits nothing that a durable server must flush. Its
		// holder comes from the statement's snapshot, which can miss a row
		// committed meanwhile (state 0 or an expired holder: the caller
		// asks again). State: 1 granted (with the fence), 2 held (the
		// holder's row), 3 void, 0 none of these. ins and upd never both
		// write: ins only where the key has no row, upd only a row of the
		// snapshot, which cannot see ins's. It runs after
		// keyLockUnlessHeld, and grants only if that took the lock.
		acquire: acquireSQL(table, fence, void, ""),
		// acquireWaiting is acquire for a waiter; $8 is its backend's
		// waiter name, $9 whether other waiters of the key wait in that
		// backend, $10 whether the backend can hear releases (false while
		// its listening connection gave its slot up: it then leaves the
		// key's waiters, since a release that named it would wake nobody). Refused, the backend enters the key's waiters (until
		// the holder's expiry and a grace), so that a release wakes one of
		// its waiters by naming it. Granted, the backend goes to the back
		// of the line if others wait in it and other backends wait too,
		// else it leaves. It writes only
		// when it enters, leaves or moves, or when its time there must
		// grow by more than waiterSlack.
		acquireWaiting: acquireSQL(table, fence, void, waiters),

		// leave: $1 key, $2 waiter name. The backend's last waiter of the
		// key gave up.
		leave: fmt.Sprintf(`DELETE FROM %s WHERE key = $1 AND waiter = $2`, waiters),

		// refresh: $1 key, $2 token hash, $3 TTL µs, $4 channel. A refresh
		// that ends the lease sooner than before wakes the key's waiters,
		// who sleep until the expiry they were told of.
		refresh: fmt.Sprintf(`
WITH u AS (
  UPDATE %[1]s x SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond'
  FROM (SELECT expires_at AS before FROM %[1]s WHERE key = $1 FOR UPDATE) o
  WHERE x.key = $1 AND x.token = $2 AND x.expires_at > clock_timestamp()
  RETURNING x.*, o.before > x.expires_at AS sooner, clock_timestamp() AS now_
)
SELECT %[2]s, (SELECT count(*) FROM (SELECT pg_notify($4, $1) FROM u WHERE sooner) w)
FROM u l`, table, columns),

		// release: $1 key, $2 token hash, $3 channel. The notification
		// names the key and the backends of its wakeOnRelease longest
		// waiters, one a line. A release that frees nothing is sent again
		// as releaseOrVoid, after keyLock.
		release: releaseSQL(table, "", waiters),
		// releaseOrVoid is release, and a token that does not hold the key
		// is marked void for voidTTL, so that an acquire with it still in
		// flight (its caller gave up) is refused when it lands instead of
		// taking the key.
		releaseOrVoid: releaseSQL(table, void, waiters),

		inspect: fmt.Sprintf(`SELECT %s FROM %s WHERE l.key = $1 AND l.expires_at > now_`, columns, t),

		// list: $1 prefix. Sorted by key, bytewise (the "C" collation).
		list: fmt.Sprintf(`SELECT %s FROM %s WHERE l.expires_at > now_ AND starts_with(l.key, $1) ORDER BY l.key`, columns, t),

		stats: fmt.Sprintf(`
SELECT count(*) FILTER (WHERE expires_at > n.t), count(*) FILTER (WHERE expires_at <= n.t)
FROM %s, (SELECT clock_timestamp() AS t) n`, table),

		// cleanup: $1 channel. Removes expired leases (a live one, even one
		// taken over while this runs, is never removed: the condition is
		// checked again on the newest row), and void marks and waiters past
		// their time.
		cleanup: fmt.Sprintf(`
WITH d AS (DELETE FROM %[1]s WHERE expires_at <= clock_timestamp() RETURNING key),
v AS (DELETE FROM %[2]s WHERE until <= clock_timestamp()),
w AS (DELETE FROM %[3]s WHERE until <= clock_timestamp())
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM (SELECT pg_notify($1, key) FROM d) n)`, table, void, waiters),

		// breakLock: $1 key, $2 channel. Frees a live lease whatever its
		// token and returns it.
		breakLock: fmt.Sprintf(`
WITH d AS (
  DELETE FROM %[1]s WHERE key = $1 AND expires_at > clock_timestamp()
  RETURNING *, clock_timestamp() AS now_
)
SELECT %[2]s, (SELECT count(*) FROM (SELECT pg_notify($2, $1) FROM d) w)
FROM d l`, table, columns),
	}
}

// columnsOr is columns for a row that may be missing (the LEFT JOIN of a
// refusal): NULLs become zero values.
func columnsOr() string {
	return `coalesce(l.key, ''), coalesce(l.lock_id, ''), coalesce(l.fence, 0), coalesce(l.host, ''),
  coalesce(l.pid, 0), coalesce(l.label, ''),
  coalesce((extract(epoch FROM now_ - l.acquired_at) * 1000000)::bigint, 0),
  coalesce((extract(epoch FROM l.expires_at - now_) * 1000000)::bigint, 0)`
}

// lockClass is the first half of the advisory locks that serialize the
// grants of a key (the second is a hash of the key). Two-part advisory
// locks are a space apart from the one-part ones programs use most.
const lockClass = 0x646c6b // "dlk"

// lockedSetting names the transaction-local setting in which
// keyLockUnlessHeld records the key it locked.
const lockedSetting = "dlock.locked_key"

// wakeOnRelease is how many of a key's longest waiting backends a release
// names: the first takes the key; the second is there in case the first
// has died without leaving (it would be named until its grace passes).
const wakeOnRelease = 2

// voidTTL is how long a void mark lasts: far longer than a request can
// wait in a socket buffer or on a row lock.
const voidTTL = "10 minutes"

// releaseSQL is the release statement (see newStatements); with void (the
// void table) it marks a token that frees nothing void.
func releaseSQL(table, void, waiters string) string {
	mark := ""
	if void != "" {
		mark = fmt.Sprintf(`
v AS (
  INSERT INTO %s (token, until)
  SELECT $2, clock_timestamp() + interval '%s' WHERE NOT EXISTS (SELECT 1 FROM d)
  ON CONFLICT (token) DO UPDATE SET until = excluded.until
),`, void, voidTTL)
	}
	return fmt.Sprintf(`
WITH d AS (DELETE FROM %[1]s WHERE key = $1 AND token = $2 AND expires_at > clock_timestamp() RETURNING key),%[2]s
stale AS (DELETE FROM %[3]s WHERE key = $1 AND until <= clock_timestamp() AND EXISTS (SELECT 1 FROM d)),
heads AS (
  SELECT coalesce(string_agg(E'\n' || waiter, '' ORDER BY since), '') AS ids
  FROM (SELECT waiter, since FROM %[3]s WHERE key = $1 AND until > clock_timestamp() ORDER BY since LIMIT %[4]d) h
)
SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM (SELECT pg_notify($3, key || heads.ids) FROM d, heads) w)`, table, mark, waiters, wakeOnRelease)
}

// acquireSQL is the acquire statement (see newStatements), and with
// waiters, a waiting acquire's.
func acquireSQL(table, fence, void, waiters string) string {
	enter := ""
	if waiters != "" {
		enter = fmt.Sprintf(`,
won AS (SELECT 1 FROM ins UNION ALL SELECT 1 FROM upd),
gone AS (DELETE FROM %[1]s WHERE key = $1 AND waiter = $8 AND (NOT $10::boolean OR NOT $9::boolean AND EXISTS (SELECT 1 FROM won))),
turn AS (
  UPDATE %[1]s SET since = clock_timestamp() WHERE key = $1 AND waiter = $8 AND $9::boolean AND $10::boolean AND EXISTS (SELECT 1 FROM won)
    AND EXISTS (SELECT 1 FROM %[1]s o WHERE o.key = $1 AND o.waiter <> $8 AND o.until > clock_timestamp())
),
due AS (
  SELECT greatest(clock_timestamp(), (SELECT max(expires_at) FROM %[2]s WHERE key = $1)) + interval '%[4]s' AS until
  WHERE $10::boolean AND NOT EXISTS (SELECT 1 FROM won) AND NOT EXISTS (SELECT 1 FROM %[3]s WHERE token = $2)
),
enter AS (
  INSERT INTO %[1]s (key, waiter, since, until)
  SELECT $1, $8, clock_timestamp(), due.until FROM due
  WHERE NOT EXISTS (SELECT 1 FROM %[1]s WHERE key = $1 AND waiter = $8 AND until >= due.until - interval '%[5]s')
  ON CONFLICT (key, waiter) DO UPDATE SET until = excluded.until
)`, waiters, table, void, waiterGrace, waiterSlack)
	}
	return fmt.Sprintf(`
WITH n AS (
  SELECT clock_timestamp() AS now_
  WHERE current_setting('%[6]s', true) = $1 AND NOT EXISTS (SELECT 1 FROM %[3]s WHERE token = $2)
),
ins AS (
  INSERT INTO %[1]s (key, token, lock_id, fence, acquired_at, expires_at, host, pid, label)
  SELECT $1, $2, $3, nextval('%[2]s'), n.now_, n.now_ + $4::bigint * interval '1 microsecond', $5, $6, $7
  FROM n ON CONFLICT (key) DO NOTHING
  RETURNING fence
),
upd AS (
  UPDATE %[1]s x SET token = $2, lock_id = $3, fence = nextval('%[2]s'), acquired_at = n.now_,
    expires_at = n.now_ + $4::bigint * interval '1 microsecond', host = $5, pid = $6, label = $7
  FROM n WHERE x.key = $1 AND x.expires_at <= clock_timestamp()
  RETURNING x.fence
)%[5]s
SELECT 1, '', '', fence, '', 0::bigint, '', 0::bigint, 0::bigint FROM ins
UNION ALL
SELECT 1, '', '', fence, '', 0::bigint, '', 0::bigint, 0::bigint FROM upd
UNION ALL
SELECT CASE WHEN l.key IS NOT NULL THEN 2
            WHEN EXISTS (SELECT 1 FROM %[3]s WHERE token = $2) THEN 3 ELSE 0 END, %[4]s
FROM (SELECT clock_timestamp() AS now_) r LEFT JOIN %[1]s l ON l.key = $1
WHERE NOT EXISTS (SELECT 1 FROM ins) AND NOT EXISTS (SELECT 1 FROM upd)`, table, fence, void, columnsOr(), enter, lockedSetting)
}

// waiterGrace is how long a backend stays among a key's waiters after the
// expiry of the lease that refused it, when it does not look again: one
// that died without leaving is named by releases no longer than that.
const waiterGrace = "5 seconds"

// waiterSlack is how much sooner than it would now a waiter's time among
// the waiters may end before a refusal writes the later time: under
// contention each refusal names a new holder, a little later, and writing
// each would cost a commit.
const waiterSlack = "2 seconds"
