// Package backendurl holds what the CLI's backend URL parsers share: the
// error that marks a URL the user must fix, and host:port and user parsing.
// It is separate from internal/cli so that a backend whose parser lives in
// its own package (internal/etcdurl) can use it without importing the CLI.
package backendurl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// ErrBad marks a backend URL that is malformed or not accepted; the CLI
// maps it to the usage exit code.
var ErrBad = errors.New("bad backend URL")

// HostPort turns "host", "host:port", "[v6]" or "[v6]:port" into a
// dialable host:port, with defaultPort where h names none.
func HostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("%w: empty server in the list", ErrBad)
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("%w: server %q needs a host and a port", ErrBad, h)
		}
		return h, nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if strings.ContainsAny(host, "[]/ ") {
		return "", fmt.Errorf("%w: bad server %q; use host:port", ErrBad, h)
	}
	return net.JoinHostPort(host, defaultPort), nil
}

type timeoutKey struct{}

// WithTimeout passes the command's bound on each store operation (its
// --timeout) to the openers, for backends that bound operations
// themselves: they use it unless the URL sets another.
func WithTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, timeoutKey{}, d)
}

// Timeout returns the bound WithTimeout passed, if any.
func Timeout(ctx context.Context) (time.Duration, bool) {
	d, ok := ctx.Value(timeoutKey{}).(time.Duration)
	return d, ok && d > 0
}

// User returns the user and password of u, empty if it has none.
func User(u *url.URL) (user, pass string) {
	if u.User == nil {
		return "", ""
	}
	pass, _ = u.User.Password()
	return u.User.Username(), pass
}
