package redislock

import "github.com/redis/go-redis/v9"

// Every primitive is one Lua script, run atomically by the server and called
// by SHA (redis.Script.Run falls back to EVAL when the script cache was
// flushed). The scripts' keys share one hash slot:
//
//	lock   the token as a plain string with a PX expiry, so that other
//	       SET-NX-PX lockers on the same key exclude us and we them
//	meta   a MessagePack sequence: fence, then what the caller encoded
//	       (metaBlob): SHA-1 of the token (hex), lock id, acquired time
//	       (the acquirer's clock, ms since the epoch), host, pid, label;
//	       same PX as the lock key
//	fence  counter (INCR; never deleted)
//	void   mark of one token: set by a release that found the token not
//	       holding the key, so that an acquire with that token still in
//	       flight (the caller gave up on it) is refused when it lands
//	       instead of taking the key
//	queue  FIFO: sorted set of lock id -> arrival (server microseconds)
//	qexp   FIFO: sorted set of lock id -> ticket deadline (server ms)
//
// Each script's comment gives its KEYS and ARGV. Each redis.call, and each
// argument, costs the server a few microseconds, more than the command
// itself, so the common paths take few arguments and make few calls: an
// uncontended acquire makes four (SET, EXISTS, INCR, SET), a refused one
// four (SET, GET, PTTL, GET), a release three (GET, DEL, PUBLISH), one
// more each with FIFO and nobody queued; the caller encodes the metadata,
// and only FIFO sends its keys and reads the server's clock.
//
// A grant replies with its fence alone, as an integer, and a release with 1
// (released) or 0 (the token did not hold the key): an array costs the
// server about 1.5µs more to build than an integer, a tenth of a script.
// Other replies are arrays whose first element is a state:
//
//	0 free
//	1 held, with dlock metadata: false, pttl, id, fence, at, host, pid, label
//	2 held without dlock metadata (another library's lock): value, pttl
//	3 (unused)
//	4 free but queued for (FIFO): head ticket id, ms until its deadline,
//	  and for a waiter its place in the queue (0 first)
//	5 refreshed: as 1
//	6 refused: the token was released before this acquire landed
//	7 held, and the caller waits in the FIFO queue: its place (0 first),
//	  then the reply of state 1 or 2 as a nested array
const (
	stateFree = iota
	stateHeld
	stateForeign
	_
	stateQueued
	stateRefreshed
	stateVoid
	stateWaiting

	// stateNumber marks a reply that is a bare integer (reply.n).
	stateNumber = -1
)

// FIFO messages on a lock's channel, besides the release's "" or head id:
// a grant from the queue announces itself, its TTL and the next in line,
// who alone watches the new lease's expiry ("+id:ttl:next"); a head that
// leaves the queue while the key is held hands that watch on, and the
// first in line says when it finds the key held (">next:pttl"). See
// notifier.wake.
const (
	grantMsg = "+"
	nextMsg  = ">"
)

// voidTTLms is how long a void mark lasts: far longer than a request can
// sit in a socket buffer.
const voidTTLms = "600000"

// holderLua defines holder(), the state of the lock key as a reply.
const holderLua = `
local function holder()
  local v = redis.call('GET', KEYS[1])
  if not v then return {0} end
  local pttl = redis.call('PTTL', KEYS[1])
  local m = redis.call('GET', KEYS[2])
  if m then
    local fence, sum, id, at, host, pid, label = cmsgpack.unpack(m)
    if sum == redis.sha1hex(v) then
      return {1, false, pttl, id, fence, at, host, pid, label}
    end
  end
  return {2, v, pttl}
end
`

// acquireScript: KEYS lock, meta, fence, void, and with FIFO queue, qexp;
// ARGV token, ttl ms, metadata (metaBlob), and with FIFO mode (1: FIFO
// order without queueing, for a caller that will not wait; 2: FIFO order
// and queue a ticket), grace ms, lock id, channel. A grant from the queue
// is published (grantMsg) so that no process wakes its waiters for a head
// that did come, and so that the next in line watches the lease (see
// notifier.wake). Only the first in line looks at the key on its own when
// the holder's lease ends, and its look, if the key is still held, says so
// (nextMsg); a waiter behind it (state 7 with a place above 0, or state 4)
// is woken by its process when its turn comes, or a grace after a lease
// ends with no word from the first in line, which may have died with the
// holder. On its own it looks only if the queue moved slower than one
// full lease (its own TTL) per waiter ahead of it; its ticket lasts until
// then.
var acquireScript = redis.NewScript(holderLua + `
local token, ttl = ARGV[1], ARGV[2]
local mode = tonumber(ARGV[4]) or 0

local function fenced()
  local fence = redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[2], cmsgpack.pack(fence) .. ARGV[3], 'PX', ttl)
  return fence
end

-- Without FIFO the void mark matters only to a grant, so a refusal, the
-- common reply under contention, does not read it.
if mode == 0 then
  if not redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl) then return holder() end
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('DEL', KEYS[1])
    return {6}
  end
  return fenced()
end

-- With FIFO a void token must not take a place in the queue either.
if redis.call('EXISTS', KEYS[4]) == 1 then return {6} end

local function grant()
  if not redis.call('SET', KEYS[1], token, 'NX', 'PX', ttl) then return nil end
  return fenced()
end

-- FIFO with nobody queued: a free key is granted as without FIFO.
if redis.call('EXISTS', KEYS[5]) == 0 then
  local g = grant()
  if g then return g end
end

-- FIFO. Drop the tickets of waiters that stopped renewing them.
local grace, id = tonumber(ARGV[5]), ARGV[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now)
for i = 1, #dead, 100 do
  local chunk = {unpack(dead, i, math.min(i + 99, #dead))}
  redis.call('ZREM', KEYS[5], unpack(chunk))
  redis.call('ZREM', KEYS[6], unpack(chunk))
end

-- join takes (or keeps) the caller's place in the queue; keep makes it
-- valid until the caller is due to look again (wait ms) plus the grace.
local function join()
  redis.call('ZADD', KEYS[5], 'NX', tonumber(t[1]) * 1000000 + tonumber(t[2]), id)
end
local function keep(wait)
  redis.call('ZADD', KEYS[6], 'GT', now + wait + grace, id)
  local last = redis.call('ZRANGE', KEYS[6], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[5], last[2])
  redis.call('PEXPIREAT', KEYS[6], last[2])
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  local head, deadline
  while true do
    local h = redis.call('ZRANGE', KEYS[5], 0, 0)
    if #h == 0 then break end
    deadline = redis.call('ZSCORE', KEYS[6], h[1])
    if deadline then head = h[1] break end
    redis.call('ZREM', KEYS[5], h[1])
  end
  if head == nil or head == id then
    redis.call('ZREM', KEYS[5], id)
    redis.call('ZREM', KEYS[6], id)
    local g = grant()
    if g then
      local next = redis.call('ZRANGE', KEYS[5], 0, 0)[1] or ''
      redis.call('PUBLISH', ARGV[7], '` + grantMsg + `' .. id .. ':' .. ttl .. ':' .. next)
    end
    return g
  end
  -- The head was woken when the key was freed; if it does not come within
  -- the grace (it died, or missed the wake-up), it loses its place.
  deadline = tonumber(deadline)
  if deadline > now + grace then
    deadline = now + grace
    redis.call('ZADD', KEYS[6], 'XX', deadline, head)
  end
  local wait = math.max(deadline - now, 0)
  if mode ~= 2 then return {4, head, wait} end
  join()
  local place = redis.call('ZRANK', KEYS[5], id)
  keep(wait + place * tonumber(ttl))
  return {4, head, wait, place}
end
local h = holder()
local wait = h[3]
if wait == nil or wait < 0 then wait = 1000 end
if mode ~= 2 then return h end
join()
local place = redis.call('ZRANK', KEYS[5], id)
keep(wait + place * tonumber(ttl))
if place == 0 then
  -- The first in line watches the lease; saying so keeps the others from
  -- looking in its stead a grace after the lease ends.
  redis.call('PUBLISH', ARGV[7], '` + nextMsg + `' .. id .. ':' .. wait)
end
return {7, place, h}
`)

// refreshScript: KEYS lock, meta; ARGV token, ttl ms, channel. A refresh
// that ends the lease sooner than before wakes the key's waiters, as
// keepScript does: they sleep until the expiry they were told of.
var refreshScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local ttl = tonumber(ARGV[2])
if ttl < redis.call('PTTL', KEYS[1]) then redis.call('PUBLISH', ARGV[3], '') end
redis.call('PEXPIRE', KEYS[1], ttl)
local m = redis.call('GET', KEYS[2])
if not m then return {5, false, tonumber(ARGV[2])} end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local fence, sum, id, at, host, pid, label = cmsgpack.unpack(m)
return {5, false, tonumber(ARGV[2]), id, fence, at, host, pid, label}
`)

// keepScript: KEYS lock, meta; ARGV token, ttl ms, channel. A refresh for
// a lease kept after its holder released it (dlock.WithMinHold) that, if
// the lease now ends sooner, wakes the key's waiters as a release does:
// they sleep until the expiry they were told of. Replies 1, or 0 if the
// token does not hold the key.
var keepScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
local before = redis.call('PTTL', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if ttl < before then redis.call('PUBLISH', ARGV[3], '') end
return 1
`)

// raiseFenceScript: KEYS fence; ARGV floor. Sets the counter to floor if
// it is lower and returns the counter (see Backend.RaiseFence).
var raiseFenceScript = redis.NewScript(`
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return c
`)

// releaseScript: KEYS lock, meta, void, and with FIFO queue, qexp; ARGV
// token, channel (empty: publish nothing, for Backend.GiveBack), and with
// FIFO the lock id and the grace ms. A token that does not hold the key is
// marked void. The release is published to wake a waiter; with FIFO it
// also drops the token's ticket (an abandoned acquire may have left one)
// and names the queue's head if its ticket is live: the one waiter the key
// is for, which must come within the grace or lose its place (the others
// then look again; see notifier.wake). Only a release that freed the key
// shortens the head's time.
var releaseScript = redis.NewScript(`
local fifo = ARGV[3] and redis.call('EXISTS', KEYS[4]) == 1
-- A ticket in qexp is always in queue too (join comes before keep).
if fifo and redis.call('ZREM', KEYS[4], ARGV[3]) == 1 then
  redis.call('ZREM', KEYS[5], ARGV[3])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('SET', KEYS[3], '1', 'PX', ` + voidTTLms + `)
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
local head = ''
if fifo then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local h = redis.call('ZRANGE', KEYS[4], 0, 0)
  local deadline = #h > 0 and tonumber(redis.call('ZSCORE', KEYS[5], h[1]) or 0) or 0
  if deadline > now then
    head = h[1]
    local due = now + tonumber(ARGV[4])
    if deadline > due then redis.call('ZADD', KEYS[5], 'XX', due, head) end
  end
end
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], head) end
return 1
`)

// dequeueScript drops the FIFO ticket of a waiter that gave up: KEYS lock,
// queue, qexp; ARGV lock id, channel. If it was first in line and the key
// is free, the others are woken, since they wait for it; if the key is
// held, the next in line is told to watch the lease (nextMsg).
var dequeueScript = redis.NewScript(`
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
local n = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if n == 1 and head[1] == ARGV[1] then
  local pttl = redis.call('PTTL', KEYS[1])
  if pttl == -2 then
    redis.call('PUBLISH', ARGV[2], '')
  else
    local next = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
    if next then redis.call('PUBLISH', ARGV[2], '` + nextMsg + `' .. next .. ':' .. pttl) end
  end
end
return {n}
`)

// inspectScript reads the holder: KEYS lock, meta.
var inspectScript = redis.NewScript(holderLua + `
return holder()
`)

// breakScript frees the key whatever its token: KEYS lock, meta; ARGV
// channel.
var breakScript = redis.NewScript(holderLua + `
local h = holder()
if h[1] ~= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('PUBLISH', ARGV[1], '')
end
return h
`)

// cleanupScript removes metadata whose lease is gone or was replaced by
// another library's lock: KEYS lock, meta; ARGV channel.
var cleanupScript = redis.NewScript(`
local m = redis.call('GET', KEYS[2])
if not m then return {0} end
local _, sum = cmsgpack.unpack(m)
local v = redis.call('GET', KEYS[1])
if v and redis.sha1hex(v) == sum then return {0} end
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[1], '')
return {1}
`)

// waitingScript: KEYS qexp. The number of FIFO tickets whose deadline
// has not passed on the server's clock: the waiters queued for the key.
var waitingScript = redis.NewScript(`
local t = redis.call('TIME')
return redis.call('ZCOUNT', KEYS[1], '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), '+inf')
`)

var allScripts = []*redis.Script{
	acquireScript, refreshScript, releaseScript, dequeueScript,
	inspectScript, breakScript, cleanupScript, waitingScript,
}
