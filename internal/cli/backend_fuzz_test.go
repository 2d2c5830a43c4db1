package cli

import (
	"context"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzBackendURL feeds openBackend arbitrary --backend values (except
// file URLs, which would create directories): it must never panic, must
// answer a value it cannot use with a usage or unavailable error, and must
// never repeat a password from the URL in its message.
func FuzzBackendURL(f *testing.F) {
	for _, seed := range []string{
		"redis://localhost:6379/0", "redis://u:sekrit99@h:1/2?prefix=p&fifo=1", "rediss://h",
		"redis+cluster://a:1,b:2", "redis+sentinel://u:pw123456@a:1,b:2/master/3",
		"memcached://h:11211", "memcached://a:1,b:2", "memcached://", "redis://u:sekrit99@h:bad",
		"redis://u:sekrit99@[::1", "etcd://x", "://", "redis://h:1/notadb", "redis://h?fifo=maybe",
		"redis://h?replicas=2", "redis://h?replicas=-1", "redis+cluster://a:1?replicas=1",
		"etcd://127.0.0.1:2379,h2?prefix=p/&timeout=1s", "etcds://h?cacert=/nonexistent", "etcd://h?prefix=",
		"etcd://h/path", "etcds://h?cert=c", "etcd://h?cacert=x",
		"redis+redlock://u:sekrit99@a:1,b:2,c:3/4?prefix=p&timeout=1s", "rediss+redlock://a:1",
		"redis+redlock://a:1,b?timeout=-1", "redis+redlock://a:1/x", "redis+redlock://a:1,a:1",
		"postgres://u:sekrit99@h:5432/db?sslmode=disable&table=t&timeout=1s", "postgresql://h/db?table=s.t",
		"postgres://u:sekrit99@h/db?sslmode=bogus", "postgres://h/db?table=Bad", "postgres:///db?host=/tmp",
		"postgres://h/db?timeout=0", "postgres://h/db?connect_timeout=x", "postgres://h/db?options=-c%20a%3Db",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if raw == "" || strings.HasPrefix(strings.ToLower(strings.TrimSpace(raw)), "file:") || dials(raw) {
			return
		}
		b, err := openBackend(context.Background(), raw, func(string) string { return "" })
		if err != nil {
			if code := exitCode(err); code != ExitUsage && code != ExitUnavailable {
				t.Fatalf("openBackend(%q): exit code %d for %v", raw, code, err)
			}
			// The message quotes the URL, and an escape there (\x00, then
			// digits) may spell the password out of other characters.
			if pw := password(raw); len(pw) >= 6 && strings.Count(raw, pw) == 1 && strings.Count(strconv.Quote(raw), pw) == 1 &&
				!strings.Contains(acceptedSchemes(), pw) && strings.Contains(err.Error(), pw) {
				t.Fatalf("openBackend(%q): message shows the password: %v", raw, err)
			}
			return
		}
		if c, ok := b.(io.Closer); ok {
			_ = c.Close()
		}
	})
}

// dials reports whether opening raw would wait on the network: the
// memcached client resolves its servers' names when it is built, and the
// etcd client authenticates at once when the URL names a user. A fuzz test
// should wait on neither.
func dials(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if strings.HasPrefix(strings.ToLower(u.Scheme), "etcd") {
		return u.User != nil
	}
	if !strings.EqualFold(u.Scheme, "memcached") {
		return false
	}
	for _, hp := range strings.Split(u.Host, ",") {
		host, _, err := net.SplitHostPort(hp)
		if err != nil {
			host = hp
		}
		if host != "" && net.ParseIP(strings.Trim(host, "[]")) == nil {
			return true
		}
	}
	return false
}

// password is what redactRaw hides, "" if nothing.
func password(raw string) string {
	red := redactRaw(raw)
	if red == raw {
		return ""
	}
	i := strings.Index(red, "xxxxx")
	return raw[i : len(raw)-(len(red)-i-len("xxxxx"))]
}

func TestRedactRaw(t *testing.T) {
	for raw, want := range map[string]string{
		"redis://u:secret@h:bad/0":      "redis://u:xxxxx@h:bad/0",
		"redis://:secret@h":             "redis://:xxxxx@h",
		"redis://u@h":                   "redis://u@h",
		"redis://h/a:b@c":               "redis://h/a:b@c",
		"redis://u:p@ss@h:1":            "redis://u:xxxxx@h:1",
		"memcached://h:1":               "memcached://h:1",
		"no scheme u:p@h":               "no scheme u:p@h",
		"redis+sentinel://u:pw@a:1,b:2": "redis+sentinel://u:xxxxx@a:1,b:2",
	} {
		if got := redactRaw(raw); got != want {
			t.Errorf("redactRaw(%q) = %q, want %q", raw, got, want)
		}
	}
}
