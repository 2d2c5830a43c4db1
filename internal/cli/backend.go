package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/backendurl"
)

// backendEnv names the environment variable that sets the backend URL when
// --backend is not given.
const backendEnv = "DLOCK_BACKEND"

// opener builds a backend from a parsed URL. It returns errors wrapping
// errBadURL for URLs it cannot accept and other errors (mapped to "store
// unavailable") when the store cannot be opened.
type opener func(ctx context.Context, u *url.URL) (dlock.Backend, error)

// backendScheme is one entry of the registry: how to open a scheme and how
// to describe its URL forms in help.
type backendScheme struct {
	open  opener
	forms []string // URL forms with a short explanation, for help
}

// backends maps URL schemes to openers. Only the CLI parses URLs; library
// users call the backends' constructors. Each backend registers from its
// own file (backend_<name>.go); etcd's real opener is registered by
// cmd/dlock-etcd (see backend_etcd.go).
var backends = map[string]backendScheme{
	"file": {
		open: openFile,
		forms: []string{
			"file:///abs/dir    file backend in directory /abs/dir (created 0700 if missing)",
			"file:rel/dir       file backend in rel/dir, relative to the working directory",
		},
	},
}

// registerBackend makes scheme:// URLs open with open, described in help by
// forms (lines of "URL   explanation"), replacing what was registered for
// the scheme. Call it before Main.
func registerBackend(scheme string, open func(ctx context.Context, u *url.URL) (dlock.Backend, error), forms []string) {
	backends[strings.ToLower(scheme)] = backendScheme{open: open, forms: forms}
}

// errBadURL marks a backend URL that is malformed or not accepted; it maps
// to the usage exit code.
var errBadURL = backendurl.ErrBad

func acceptedSchemes() string {
	names := make([]string, 0, len(backends))
	for name := range backends {
		names = append(names, name+"://")
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// backendHelp describes the URL forms and the default, for `dlock --help`.
func backendHelp() string {
	var names []string
	for name := range backends {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		for _, f := range backends[name].forms {
			b.WriteString("  " + f + "\n")
		}
	}
	dir, err := filelock.DefaultDir()
	switch {
	case err != nil:
		fmt.Fprintf(&b, "  (none given)       file backend in the per-user directory (unavailable here: %v)\n", err)
	case dir == "":
		b.WriteString("  (none given)       file backend in the per-user directory\n")
	default:
		fmt.Fprintf(&b, "  (none given)       file backend in the per-user directory %s\n", dir)
		b.WriteString("                     ($DLOCK_DIR sets another directory)\n")
	}
	return b.String()
}

// openBackend opens the backend named by raw, else by $DLOCK_BACKEND (read
// with getenv), else the file backend in filelock.DefaultDir. Errors:
// malformed URLs and unknown schemes are usage errors naming the accepted
// schemes; a store that cannot be opened is "unavailable".
func openBackend(ctx context.Context, raw string, getenv func(string) string) (dlock.Backend, error) {
	source := "--backend"
	if raw == "" {
		raw, source = getenv(backendEnv), "$"+backendEnv
	}
	if raw == "" {
		dir, err := filelock.DefaultDir()
		if err != nil {
			return nil, &exitError{code: ExitUnavailable, err: fmt.Errorf("default file backend: %w", err)}
		}
		b, err := newFileBackend(dir)
		if err != nil {
			return nil, &exitError{code: ExitUnavailable, err: fmt.Errorf("file backend %s: %w", dir, err)}
		}
		return b, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, badURL(source, raw, "%v", errors.Unwrap(err))
	}
	if u.Scheme == "" {
		return nil, badURL(source, raw, "no scheme")
	}
	scheme, ok := backends[strings.ToLower(u.Scheme)]
	if !ok {
		return nil, badURL(source, raw, "unknown scheme %q", u.Scheme)
	}
	b, err := scheme.open(ctx, u)
	switch {
	case errors.Is(err, errBadURL):
		return nil, badURL(source, raw, "%v", strings.TrimPrefix(err.Error(), errBadURL.Error()+": "))
	case err != nil:
		return nil, &exitError{code: ExitUnavailable, err: fmt.Errorf("backend %s: %w", redact(u), err)}
	}
	return b, nil
}

func badURL(source, raw, format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf("%s %q: %s; accepted schemes: %s (see 'dlock --help')",
		source, redactRaw(raw), fmt.Sprintf(format, args...), acceptedSchemes())}
}

// redact hides a password in a URL before it is shown in a message.
func redact(u *url.URL) string { return u.Redacted() }

// redactRaw hides the password of a URL that may not parse: whatever
// follows the first ':' of the user info (between "://" and the last '@'
// before the path).
func redactRaw(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	authority := raw[i+3:]
	if j := strings.IndexAny(authority, "/?#"); j >= 0 {
		authority = authority[:j]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return raw
	}
	colon := strings.Index(authority[:at], ":")
	if colon < 0 {
		return raw
	}
	start := i + 3 + colon + 1
	return raw[:start] + "xxxxx" + raw[i+3+at:]
}

// openFile opens file:///abs/dir, file://localhost/abs/dir or
// file:rel/dir.
func openFile(_ context.Context, u *url.URL) (dlock.Backend, error) {
	var dir string
	switch {
	case u.Opaque != "":
		dir = u.Opaque // file:rel/dir
	case u.Host != "" && u.Host != "localhost":
		return nil, fmt.Errorf("%w: host %q in a file URL; use file:///abs/dir or file:rel/dir", errBadURL, u.Host)
	default:
		dir = u.Path
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: the file backend takes no query or fragment", errBadURL)
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: no directory; use file:///abs/dir or file:rel/dir", errBadURL)
	}
	dir, err := url.PathUnescape(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	return newFileBackend(filepath.Clean(dir))
}

// newFileBackend opens the file backend in dir.
func newFileBackend(dir string) (dlock.Backend, error) {
	b, err := filelock.New(dir)
	if err != nil {
		return nil, err
	}
	return b, nil
}
