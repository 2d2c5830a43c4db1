package redislock

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// names are the Redis keys and the pub/sub channel of one lock. All keys
// share the lock key's hash slot, so one script may touch them all on Redis
// Cluster.
type names struct {
	lock    string // prefix + user key: holds the token, PX expiry
	meta    string // MessagePack: lock id, fence, owner, acquired time; same PX
	fence   string // counter, never deleted by dlock
	queue   string // FIFO: sorted set of tickets by arrival
	expiry  string // FIFO: sorted set of tickets by deadline
	channel string // PUBLISHed on release, break and cleanup
	tag     string // "{tag}": puts a helper key in the lock key's slot
}

// Suffixes of the helper keys. A helper key is "{tag}" + suffix + lock key,
// where tag puts it in the lock key's slot.
const (
	metaInfix   = ":dlock:meta:"
	fenceInfix  = ":dlock:fence:"
	queueInfix  = ":dlock:queue:"
	expiryInfix = ":dlock:qexp:"
	voidInfix   = ":dlock:void:"
	channelPfx  = "dlock:wake:"
)

// names returns the names of key's lock, from b's cache when it has them.
func (b *Backend) names(key string) names {
	if n, ok := b.named.get(key); ok {
		return n
	}
	n := b.buildNames(key)
	b.named.put(key, n)
	return n
}

// nameCache keeps the names of the keys a backend used last: building them
// costs an allocation and a CRC16 per call, a microsecond or two per
// acquire+release pair, and most programs lock a few keys over and over.
// It holds at most maxNamed keys and starts afresh when full, so a program
// that locks ever new keys pays one map store per call and bounded memory.
type nameCache struct {
	m sync.Map // key -> *names
	n atomic.Int32
}

const maxNamed = 1024

func (c *nameCache) get(key string) (names, bool) {
	if v, ok := c.m.Load(key); ok {
		return *v.(*names), true
	}
	return names{}, false
}

func (c *nameCache) put(key string, n names) {
	if c.n.Add(1) > maxNamed {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(key, &n)
}

func (b *Backend) buildNames(key string) names {
	k := b.prefix + key
	tag := slotTag(k)
	// Every call names a lock, so its names are slices of one string: one
	// allocation instead of one per name.
	helpers := [...]string{metaInfix, fenceInfix, queueInfix, expiryInfix}
	const infixes = len(metaInfix + fenceInfix + queueInfix + expiryInfix + channelPfx)
	var sb strings.Builder
	sb.Grow(len(helpers)*(len(tag)+2+len(k)) + infixes + len(k))
	var ends [len(helpers)]int
	for i, infix := range helpers {
		sb.WriteByte('{')
		sb.WriteString(tag)
		sb.WriteByte('}')
		sb.WriteString(infix)
		sb.WriteString(k)
		ends[i] = sb.Len()
	}
	sb.WriteString(channelPfx)
	sb.WriteString(k)
	all := sb.String()
	return names{
		lock:    k,
		meta:    all[:ends[0]],
		fence:   all[ends[0]:ends[1]],
		queue:   all[ends[1]:ends[2]],
		expiry:  all[ends[2]:ends[3]],
		channel: all[ends[3]:],
		tag:     all[:len(tag)+2],
	}
}

// void is the key of the void mark of the token with lock id id.
func (n names) void(id string) string { return n.tag + voidInfix + id }

// The KEYS of the scripts (see scripts.go).

func (n names) pair() []string { return []string{n.lock, n.meta} }

func (n names) acquireKeys(id string, fifo bool) []string {
	if fifo {
		return []string{n.lock, n.meta, n.fence, n.void(id), n.queue, n.expiry}
	}
	return []string{n.lock, n.meta, n.fence, n.void(id)}
}

func (n names) releaseKeys(id string, fifo bool) []string {
	if fifo {
		return []string{n.lock, n.meta, n.void(id), n.queue, n.expiry}
	}
	return []string{n.lock, n.meta, n.void(id)}
}

func (n names) dequeueKeys() []string { return []string{n.lock, n.queue, n.expiry} }

// lockKeyOfMeta returns the lock key a meta key belongs to. The tag in front
// never contains '}', so the first "}" + metaInfix ends it.
func lockKeyOfMeta(meta string) (string, bool) {
	if !strings.HasPrefix(meta, "{") {
		return "", false
	}
	i := strings.Index(meta, "}"+metaInfix)
	if i < 0 {
		return "", false
	}
	return meta[i+1+len(metaInfix):], true
}

// hashTag returns the part of key Redis Cluster hashes: the text between
// the first '{' and the first '}' after it when that is not empty, else the
// whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slotTag returns a hash tag that hashes to key's slot: key's own tag when it
// has one, else a short string from a table with one entry per slot. The
// whole key cannot simply be wrapped in braces, since it may contain '}'.
func slotTag(key string) string {
	if tag := hashTag(key); tag != key {
		return tag
	}
	return slotTags()[keySlot(key)]
}

const numSlots = 16384

// slotTags maps each cluster slot to the shortest base-36 string hashing to
// it. It is built once, on first use (about 160k CRC16s of 1-4 bytes).
var slotTags = sync.OnceValue(func() []string {
	tags := make([]string, numSlots)
	for i, left := 0, numSlots; left > 0; i++ {
		s := strconv.FormatInt(int64(i), 36)
		if slot := crc16(s) % numSlots; tags[slot] == "" {
			tags[slot] = s
			left--
		}
	}
	return tags
})

// keySlot is the Redis Cluster slot of key.
func keySlot(key string) uint16 { return crc16(hashTag(key)) % numSlots }

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the hash Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[i]]
	}
	return crc
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// globEscape quotes the characters special to SCAN MATCH patterns.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
