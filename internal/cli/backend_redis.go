package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/backendurl"
	"github.com/dlock-dev/dlock/redislock"
)

func init() {
	for _, scheme := range []string{"redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"} {
		backends[scheme] = backendScheme{open: openRedis}
	}
	// The forms are listed once, under the first scheme in sorted order.
	backends["redis"] = backendScheme{
		open: openRedis,
		forms: []string{
			"redis://[user:pass@]host:port[/db]   Redis backend; rediss:// for TLS",
			"redis+cluster://[user:pass@]h1:p1,h2:p2   Redis Cluster (seed nodes); rediss+cluster:// for TLS",
			"redis+sentinel://[user:pass@]h1:p1,h2:p2/master[/db]   Sentinel failover; rediss+sentinel://",
			"                         ?prefix=P (default dlock:, empty: bare keys for SET-NX-PX compatibility)",
			"                         ?fifo=1 first-come-first-served order (see docs/redis.md)",
			"                         ?replicas=N a grant or refresh counts once N replicas have it (not with +cluster)",
		},
	}
}

// redisBackend is the CLI's Redis backend: it owns its go-redis client and
// closes it with the backend.
type redisBackend struct {
	*redislock.Backend
}

func (b redisBackend) Close() error {
	return errors.Join(b.Backend.Close(), b.Client().Close())
}

// openRedis opens the redis[s][+cluster|+sentinel]:// forms. It does not
// connect: an unreachable server shows on the first operation as "store
// unavailable".
func openRedis(_ context.Context, u *url.URL) (dlock.Backend, error) {
	// go-redis logs dial failures to stderr by itself; the CLI reports
	// errors once, in its own words.
	redis.SetLogger(quietRedis{})
	scheme := strings.ToLower(u.Scheme)
	base, kind, _ := strings.Cut(scheme, "+")
	useTLS := base == "rediss"
	if u.Opaque != "" || u.Fragment != "" || u.Host == "" {
		return nil, fmt.Errorf("%w: use %s://host:port", errBadURL, scheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	var opts []redislock.Option
	if v, ok := q["prefix"]; ok {
		opts = append(opts, redislock.WithPrefix(v[len(v)-1]))
		q.Del("prefix")
	}
	if v, ok := q["fifo"]; ok {
		on, err := strconv.ParseBool(v[len(v)-1])
		if err != nil {
			return nil, fmt.Errorf("%w: fifo=%q is not a boolean", errBadURL, v[len(v)-1])
		}
		opts = append(opts, redislock.WithFIFO(on))
		q.Del("fifo")
	}
	if v, ok := q["replicas"]; ok {
		n, err := strconv.Atoi(v[len(v)-1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: replicas=%q is not a number of replicas", errBadURL, v[len(v)-1])
		}
		opts = append(opts, redislock.WithReplicas(n, redislock.DefaultReplicaTimeout))
		q.Del("replicas")
	}
	var rdb redis.UniversalClient
	switch kind {
	case "":
		// go-redis parses the rest, including its own query options
		// (dial_timeout, read_timeout, pool_size, ...).
		plain := *u
		plain.Scheme = base
		plain.RawQuery = q.Encode()
		o, err := redis.ParseURL(plain.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errBadURL, err)
		}
		o.ContextTimeoutEnabled = true
		rdb = redis.NewClient(o)
	case "cluster":
		if len(q) > 0 || strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("%w: %s:// takes no path and only ?prefix and ?fifo", errBadURL, scheme)
		}
		addrs, err := redisAddrs(u.Host)
		if err != nil {
			return nil, err
		}
		o := &redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true}
		o.Username, o.Password = backendurl.User(u)
		if useTLS {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		rdb = redis.NewClusterClient(o)
	case "sentinel":
		if len(q) > 0 {
			return nil, fmt.Errorf("%w: %s:// takes only ?prefix, ?fifo and ?replicas", errBadURL, scheme)
		}
		addrs, err := redisAddrs(u.Host)
		if err != nil {
			return nil, err
		}
		master, dbText, _ := strings.Cut(strings.Trim(u.Path, "/"), "/")
		if master == "" {
			return nil, fmt.Errorf("%w: no master name; use %s://h1:p1,h2:p2/master[/db]", errBadURL, scheme)
		}
		db, err := redisDB(dbText)
		if err != nil {
			return nil, err
		}
		o := &redis.FailoverOptions{MasterName: master, SentinelAddrs: addrs, DB: db, ContextTimeoutEnabled: true}
		o.Username, o.Password = backendurl.User(u)
		if useTLS {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		rdb = redis.NewFailoverClient(o)
	default:
		return nil, fmt.Errorf("%w: unknown scheme %q", errBadURL, scheme)
	}
	b, err := redislock.New(rdb, opts...)
	if err != nil {
		_ = rdb.Close()
		if errors.Is(err, dlock.ErrInvalidOption) {
			return nil, fmt.Errorf("%w: %v", errBadURL, err)
		}
		return nil, err
	}
	return redisBackend{b}, nil
}

// redisAddrs splits "h1:p1,h2:p2"; a missing port is 6379 for Redis and
// 26379 would be wrong to guess for Sentinel, so every entry needs one.
func redisAddrs(hosts string) ([]string, error) {
	var addrs []string
	for h := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("%w: node %q needs host:port", errBadURL, h)
		}
		addrs = append(addrs, h)
	}
	return addrs, nil
}

// redisDB parses the database number of a URL path ("" is 0).
func redisDB(text string) (int, error) {
	if text == "" {
		return 0, nil
	}
	db, err := strconv.Atoi(text)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("%w: database %q is not a number", errBadURL, text)
	}
	return db, nil
}

// quietRedis discards go-redis's internal log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
