package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/backendurl"
	"github.com/dlock-dev/dlock/memcachelock"
)

func init() {
	backends["memcached"] = backendScheme{
		open: openMemcached,
		forms: []string{
			"memcached://host:port    memcached backend (default port 11211): an efficiency lock, lost",
			"                         if memcached restarts, evicts or is flushed; fences are best effort",
			"memcached://h1,h2:port   several servers, each key on one of them: all clients must list",
			"                         the same servers in the same order (see docs/memcached.md)",
			"                         ?prefix=P (default dlock:)  ?timeout=D (default 1s)",
			"                         ?server=host:port adds a server (IPv6: ?server=[::1]:11211)",
		},
	}
}

// memcachedPort is memcached's standard port, used when a URL names none.
const memcachedPort = "11211"

// openMemcached opens memcached://host[:port][,host[:port]...][?prefix=P&
// timeout=D&server=host:port...]. It does not connect: an unreachable
// server shows on the first operation as "store unavailable".
func openMemcached(_ context.Context, u *url.URL) (dlock.Backend, error) {
	if u.User != nil {
		return nil, fmt.Errorf("%w: memcached takes no user or password", errBadURL)
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return nil, fmt.Errorf("%w: use memcached://host:port with no path", errBadURL)
	}
	var hosts []string
	if u.Host != "" {
		hosts = strings.Split(u.Host, ",")
	}
	var opts []memcachelock.Option
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	for name, vals := range q {
		switch name {
		case "server":
			hosts = append(hosts, vals...)
		case "prefix":
			opts = append(opts, memcachelock.WithPrefix(vals[len(vals)-1]))
		case "timeout":
			d, err := time.ParseDuration(vals[len(vals)-1])
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%w: timeout %q is not a positive duration such as 2s", errBadURL, vals[len(vals)-1])
			}
			opts = append(opts, memcachelock.WithTimeout(d))
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q (accepted: prefix, timeout, server)", errBadURL, name)
		}
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("%w: no server; use memcached://host:port", errBadURL)
	}
	servers := make([]string, len(hosts))
	for i, h := range hosts {
		if servers[i], err = backendurl.HostPort(h, memcachedPort); err != nil {
			return nil, err
		}
	}
	b, err := memcachelock.New(servers, opts...)
	switch {
	case errors.Is(err, dlock.ErrInvalidOption):
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	case err != nil:
		return nil, err // a name that did not resolve: unavailable
	}
	return b, nil
}
