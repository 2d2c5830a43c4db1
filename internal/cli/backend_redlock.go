package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/backendurl"
	"github.com/dlock-dev/dlock/redlock"
)

func init() {
	backends["redis+redlock"] = backendScheme{
		open: openRedlock,
		forms: []string{
			"redis+redlock://[user:pass@]h1:p1,h2:p2,h3:p3[/db]   Redlock: held while most of these",
			"                         independent Redis masters hold it; rediss+redlock:// for TLS",
			"                         ?prefix=P (default dlock:)  ?timeout=D per master call (default 1s)",
			"                         ?fifo=1 first-come-first-served order (see docs/redlock.md)",
		},
	}
	backends["rediss+redlock"] = backendScheme{open: openRedlock}
}

// redlockBackend is the CLI's Redlock backend: it owns its go-redis
// clients and closes them with the backend.
type redlockBackend struct {
	*redlock.Backend
	clients []*redis.Client
}

func (b redlockBackend) Close() error {
	errs := []error{b.Backend.Close()}
	for _, c := range b.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// openRedlock opens redis+redlock://[user:pass@]h1:p1,h2:p2,...[/db]
// [?prefix=P&timeout=D&fifo=B] and rediss+redlock:// (TLS to every master). It does not
// connect: an unreachable master shows on the first operation.
func openRedlock(_ context.Context, u *url.URL) (dlock.Backend, error) {
	redis.SetLogger(quietRedis{})
	scheme := strings.ToLower(u.Scheme)
	if u.Opaque != "" || u.Fragment != "" || u.Host == "" {
		return nil, fmt.Errorf("%w: use %s://h1:p1,h2:p2,h3:p3", errBadURL, scheme)
	}
	addrs, err := redisAddrs(u.Host)
	if err != nil {
		return nil, err
	}
	db, err := redisDB(strings.Trim(u.Path, "/"))
	if err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	var opts []redlock.Option
	for name, vals := range q {
		v := vals[len(vals)-1]
		switch name {
		case "prefix":
			opts = append(opts, redlock.WithPrefix(v))
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%w: timeout %q is not a positive duration such as 500ms", errBadURL, v)
			}
			opts = append(opts, redlock.WithMasterTimeout(d))
		case "fifo":
			on, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%w: fifo=%q is not a boolean", errBadURL, v)
			}
			opts = append(opts, redlock.WithFIFO(on))
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q (accepted: prefix, timeout, fifo)", errBadURL, name)
		}
	}
	user, pass := backendurl.User(u)
	clients := make([]*redis.Client, len(addrs))
	universal := make([]redis.UniversalClient, len(addrs))
	for i, addr := range addrs {
		// A master that is down must fail at once, not after retries
		// that use up the master timeout: the others make the quorum.
		o := &redis.Options{
			Addr: addr, Username: user, Password: pass, DB: db, ContextTimeoutEnabled: true,
			MaxRetries: -1, DialerRetries: 1,
		}
		if scheme == "rediss+redlock" {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		clients[i] = redis.NewClient(o)
		universal[i] = clients[i]
	}
	b, err := redlock.New(universal, opts...)
	if err != nil {
		for _, c := range clients {
			_ = c.Close()
		}
		if errors.Is(err, dlock.ErrInvalidOption) {
			return nil, fmt.Errorf("%w: %v", errBadURL, err)
		}
		return nil, err
	}
	return redlockBackend{b, clients}, nil
}
