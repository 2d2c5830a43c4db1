package memcachelock

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/dlock-dev/dlock"
)

// List implements [dlock.Lister], as far as memcached allows: memcached has
// no command to enumerate keys, so List walks every item of every server
// with "lru_crawler metadump all" (memcached 1.4.31 and later, enabled by
// default), keeps the items under this backend's prefix and reads them.
// This is best effort: an item written while the crawler runs may be
// missed, and the walk costs time proportional to the whole cache, not to
// the number of locks, so avoid it on large shared caches.
//
// Items under the prefix that are not lock records of this package are
// skipped. Errors wrap [dlock.ErrUnsupported] if a server refuses the
// crawler, [dlock.ErrUnavailable] for transport errors, or are context
// errors.
func (b *Backend) List(ctx context.Context, prefix string) ([]dlock.Record, error) {
	vals, err := b.scan(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("memcachelock: list: %w", err)
	}
	now := time.Now()
	var out []dlock.Record
	for _, v := range vals {
		if v.live(now) {
			out = append(out, v.record())
		}
	}
	slices.SortFunc(out, func(a, b dlock.Record) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// Stats implements [dlock.StatsReporter] by the same walk as
// [Backend.List]: Active counts live leases, Expired the records whose
// stored expiry has passed but which memcached has not dropped yet (it
// drops them within two seconds). Released locks are not counted. Errors are
// as for List.
func (b *Backend) Stats(ctx context.Context) (dlock.Stats, error) {
	vals, err := b.scan(ctx, "")
	if err != nil {
		return dlock.Stats{}, fmt.Errorf("memcachelock: stats: %w", err)
	}
	now := time.Now()
	var s dlock.Stats
	for _, v := range vals {
		switch {
		case v.Released:
			continue
		case v.live(now):
			s.Active++
		default:
			s.Expired++
		}
		s.Total++
	}
	return s, nil
}

// scan returns the records on all servers whose dlock key starts with
// keyPrefix.
func (b *Backend) scan(ctx context.Context, keyPrefix string) ([]*value, error) {
	seen := make(map[string]bool)
	var found []string
	for _, addr := range b.servers {
		keys, err := b.dumpKeys(ctx, addr)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if !seen[k] && b.mayMatch(k, keyPrefix) {
				seen[k] = true
				found = append(found, k)
			}
		}
	}
	var out []*value
	for batch := range slices.Chunk(found, 100) {
		items, err := call(ctx, b, func() (map[string]*memcache.Item, error) { return b.mc.GetMulti(batch) }, nil)
		if err != nil {
			return nil, fail("read", "", err)
		}
		for k, it := range items {
			v, err := b.decodeItem(k, it.Value)
			if err != nil || !strings.HasPrefix(v.Key, keyPrefix) {
				continue // not ours (see List), or outside the prefix
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// mayMatch reports whether item key k is a lock record of this backend that
// may hold a dlock key starting with keyPrefix. Plain keys are decoded and
// checked here; hashed keys must be read to know.
func (b *Backend) mayMatch(k, keyPrefix string) bool {
	rest, ok := strings.CutPrefix(k, b.prefix)
	if !ok {
		return false
	}
	if enc, ok := strings.CutPrefix(rest, tagPlain); ok {
		key, err := base64.RawURLEncoding.DecodeString(enc)
		return err == nil && strings.HasPrefix(string(key), keyPrefix)
	}
	return strings.HasPrefix(rest, tagHash)
}

// decodeItem parses the value of the item itemKey, whose dlock key is not
// known beforehand, and checks that the record belongs under that item key.
func (b *Backend) decodeItem(ik string, data []byte) (*value, error) {
	var probe struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: item %q: %v", dlock.ErrCorrupt, ik, err)
	}
	if itemKey(b.prefix, probe.Key) != ik {
		return nil, fmt.Errorf("%w: item %q holds a record for %q", dlock.ErrCorrupt, ik, probe.Key)
	}
	return decodeValue(probe.Key, data)
}

// dumpKeys returns the keys of every item on one server, from
// "lru_crawler metadump hash" over a connection of its own (gomemcache has
// no such command). Walking the hash table sees every linked item; walking
// the LRUs ("metadump all", the fallback for servers before 1.6 that lack
// "hash") misses items that memcached is moving between LRUs, which it does
// for a while after each read. The connection is closed when ctx ends, and
// every read must make progress within the backend's timeout.
func (b *Backend) dumpKeys(ctx context.Context, addr string) ([]string, error) {
	network := "tcp"
	if strings.Contains(addr, "/") {
		network = "unix"
	}
	d := net.Dialer{Timeout: b.timeout}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fail("metadump", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	wrap := func(err error) error {
		if ctx.Err() != nil {
			err = ctx.Err() // the read failed because ctx closed the connection
		}
		return fail("metadump", addr, err)
	}
	r := bufio.NewReader(conn)
	mode := "hash"
	for {
		_ = conn.SetDeadline(time.Now().Add(b.timeout))
		if _, err := conn.Write([]byte("lru_crawler metadump " + mode + "\r\n")); err != nil {
			return nil, wrap(err)
		}
		keys, reply, err := readDump(r, conn, b.timeout)
		switch {
		case err != nil:
			return nil, wrap(err)
		case reply == "END":
			return keys, nil
		case strings.HasPrefix(reply, "BUSY"):
			// Another crawl runs on this server: try again shortly.
			t := time.NewTimer(20 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, wrap(ctx.Err())
			case <-t.C:
			}
		case mode == "hash":
			mode = "all" // an older server: walk the LRUs instead
		default:
			// ERROR, CLIENT_ERROR (crawler or dumps disabled), unknown.
			return nil, fmt.Errorf("%w: server %s refused lru_crawler metadump: %q", dlock.ErrUnsupported, addr, reply)
		}
	}
}

// readDump reads one metadump reply: the keys of its "key=..." lines and
// the line that ended it ("END", or an error or BUSY reply).
func readDump(r *bufio.Reader, conn net.Conn, timeout time.Duration) (keys []string, reply string, err error) {
	for {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		field, _, _ := strings.Cut(line, " ")
		enc, ok := strings.CutPrefix(field, "key=")
		if !ok {
			return keys, line, nil
		}
		if k, err := url.PathUnescape(enc); err == nil {
			keys = append(keys, k)
		}
	}
}
