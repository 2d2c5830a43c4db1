//go:build unix && !aix

package filelock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
)

// newBackend returns a backend over a fresh directory.
func newBackend(t *testing.T, opts ...filelock.Option) (*filelock.Backend, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := filelock.New(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, dir
}

// uniqueKey returns a key no other test uses.
func uniqueKey(t *testing.T) string {
	return t.Name() + "/" + rand.Text()[:8]
}

func keyFile(dir, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(dir, hex.EncodeToString(sum[:])+".lock")
}

var lockFileName = regexp.MustCompile(`^[0-9a-f]{64}\.lock$`)

func TestAwkwardKeysMapToDistinctSafeFiles(t *testing.T) {
	ctx := t.Context()
	parent := t.TempDir()
	dir := filepath.Join(parent, "locks")
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{
		"plain",
		"with space",
		" leading and trailing ",
		"a/b/c",
		"/absolute",
		"../x",
		"../../../../etc/passwd",
		".",
		"..",
		".fence-floor",
		`back\slash`,
		`"quoted"`,
		"ünïcödé ключ 鍵 🔒",
		"\u2028line separator",
		strings.Repeat("k", dlock.MaxKeyLen),
		strings.Repeat("é", dlock.MaxKeyLen/2),
		"PLAIN", // differs from "plain" only in case
	}
	c := dlock.New(b, dlock.WithTTL(time.Minute))
	locks := make(map[string]*dlock.Lock)
	for _, k := range keys {
		l, err := c.TryAcquire(ctx, k)
		if err != nil {
			t.Fatalf("TryAcquire(%q) = %v; every key should be free and independent", k, err)
		}
		locks[k] = l
	}
	for _, k := range keys {
		rec, found, err := c.Inspect(ctx, k)
		if err != nil || !found || rec.Key != k || rec.LockID != locks[k].LockID() {
			t.Errorf("Inspect(%q) = %+v, %v, %v; want its own lock %s", k, rec, found, err, locks[k].LockID())
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		switch {
		case e.Name() == ".fence-floor":
		case lockFileName.MatchString(e.Name()) && e.Type().IsRegular():
			n++
		default:
			t.Errorf("unexpected entry %q in the lock directory", e.Name())
		}
	}
	if n != len(keys) {
		t.Errorf("%d key files for %d keys", n, len(keys))
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("the lock directory's parent has %d entries, want only the directory: a key escaped", len(entries))
	}
	recs, err := c.List(ctx, "")
	if err != nil || len(recs) != len(keys) {
		t.Errorf("List = %d records, %v; want %d", len(recs), err, len(keys))
	}
	for _, k := range keys {
		if err := locks[k].Release(ctx); err != nil {
			t.Errorf("Release(%q) = %v", k, err)
		}
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", d, perm)
		}
	}
	key := uniqueKey(t)
	if _, err := dlock.New(b).TryAcquire(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{keyFile(dir, key), filepath.Join(dir, ".fence-floor")} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", f, perm)
		}
	}
}

func TestNewRejectsUnusableDirectories(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, dir string
		want      error
	}{
		{"parent is a file", filepath.Join(file, "locks"), dlock.ErrUnavailable},
		{"path is a file", file, dlock.ErrUnavailable},
		{"empty path", "", dlock.ErrInvalidOption},
	}
	// An unwritable directory. chmod does not stop root, so root gets a
	// directory of a read-only kernel file system instead.
	if os.Getuid() != 0 {
		ro := filepath.Join(tmp, "readonly")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct {
			name, dir string
			want      error
		}{"unwritable directory", ro, dlock.ErrUnavailable})
	} else if fi, err := os.Stat("/sys/kernel"); err == nil && fi.IsDir() {
		cases = append(cases, struct {
			name, dir string
			want      error
		}{"unwritable directory", "/sys/kernel", dlock.ErrUnavailable})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := filelock.New(tc.dir)
			if !errors.Is(err, tc.want) {
				t.Fatalf("New(%q) = %v, %v; want an error matching %v", tc.dir, b, err, tc.want)
			}
			if tc.dir != "" && !strings.Contains(err.Error(), tc.dir) {
				t.Errorf("error %q does not name the path %q", err, tc.dir)
			}
		})
	}
}

func TestTokenIsNotStored(t *testing.T) {
	b, dir := newBackend(t)
	key := uniqueKey(t)
	l, err := dlock.New(b, dlock.WithLabel("job")).TryAcquire(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(keyFile(dir, key))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(l.Token())) {
		t.Fatalf("the key file contains the token: %s", data)
	}
	sum := sha256.Sum256([]byte(l.Token()))
	var rec struct {
		Key         string    `json:"key"`
		LockID      string    `json:"lock_id"`
		Fence       uint64    `json:"fence"`
		TokenSHA256 string    `json:"token_sha256"`
		AcquiredAt  time.Time `json:"acquired_at"`
		ExpiresAt   time.Time `json:"expires_at"`
		Owner       struct {
			Host  string `json:"host"`
			PID   int    `json:"pid"`
			Label string `json:"label"`
		} `json:"owner"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatalf("the key file is not JSON: %v\n%s", err, data)
	}
	host, _ := os.Hostname()
	if rec.Key != key || rec.LockID != l.LockID() || rec.Fence != l.Fence() ||
		rec.TokenSHA256 != hex.EncodeToString(sum[:]) || rec.ExpiresAt.Before(rec.AcquiredAt) ||
		rec.Owner.Host != host || rec.Owner.PID != os.Getpid() || rec.Owner.Label != "job" {
		t.Errorf("record = %+v, want key %q lock %s fence %d, the token's hash and this process", rec, key, l.LockID(), l.Fence())
	}
}

func TestCorruptRecordIsReportedAndKept(t *testing.T) {
	cases := map[string]string{
		"garbage":     "not json at all\n",
		"truncated":   `{"key":"k","fence":4,"lock_id":"ab`,
		"no fence":    `{"key":%q}` + "\n",
		"other key":   `{"key":"someone else","fence":3}` + "\n",
		"bad hash":    `{"key":%q,"fence":3,"lock_id":"x","token_sha256":"zz","expires_at":"2030-01-01T00:00:00Z"}` + "\n",
		"binary":      "\x00\x01\x02",
		"only spaces": "   \n",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			b, dir := newBackend(t)
			key := uniqueKey(t)
			if strings.Contains(content, "%q") {
				content = strings.ReplaceAll(content, "%q", `"`+key+`"`)
			}
			path := keyFile(dir, key)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			c := dlock.New(b)
			if _, err := c.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
				t.Errorf("TryAcquire = %v, want ErrCorrupt", err)
			}
			if _, _, err := c.Inspect(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
				t.Errorf("Inspect = %v, want ErrCorrupt", err)
			}
			if _, _, err := c.Break(ctx, key); !errors.Is(err, dlock.ErrCorrupt) {
				t.Errorf("Break = %v, want ErrCorrupt", err)
			}
			if err := b.Release(ctx, key, "0123456789abcdef0123456789abcdef"); !errors.Is(err, dlock.ErrCorrupt) {
				t.Errorf("Release = %v, want ErrCorrupt", err)
			}
			if _, err := b.Refresh(ctx, key, "0123456789abcdef0123456789abcdef", time.Second); !errors.Is(err, dlock.ErrCorrupt) {
				t.Errorf("Refresh = %v, want ErrCorrupt", err)
			}
			if n, err := c.Cleanup(ctx); !errors.Is(err, dlock.ErrCorrupt) || n != 0 {
				t.Errorf("Cleanup = %d, %v; want 0 and ErrCorrupt", n, err)
			}
			if recs, err := c.List(ctx, ""); err != nil || len(recs) != 0 {
				t.Errorf("List = %v, %v; want no records and no error", recs, err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != content {
				t.Errorf("the corrupt file changed: %q, %v; want %q", got, err, content)
			}
		})
	}
}

func TestFenceGrowsAcrossReleaseCleanupAndRestart(t *testing.T) {
	ctx := t.Context()
	b, dir := newBackend(t)
	key, other := uniqueKey(t), uniqueKey(t)
	var last uint64
	grant := func(b *filelock.Backend, ttl time.Duration) *dlock.Lock {
		t.Helper()
		l, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		if l.Fence() <= last {
			t.Fatalf("fence %d after %d", l.Fence(), last)
		}
		last = l.Fence()
		return l
	}
	for range 3 {
		if err := grant(b, time.Minute).Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Another key with a higher fence raises the floor past this key's.
	for range 5 {
		l, err := dlock.New(b).TryAcquire(ctx, other)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Cleanup removes free records without counting them.
	if n, err := dlock.New(b).Cleanup(ctx); err != nil || n != 0 {
		t.Fatalf("Cleanup = %d, %v; want 0 (only free records)", n, err)
	}
	if _, err := os.Stat(keyFile(dir, key)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the free record was not removed: %v", err)
	}
	grant(b, time.Minute).Release(ctx)

	// An expired lease is counted by Cleanup.
	grant(b, 20*time.Millisecond)
	waitFree(t, b, key)
	if n, err := dlock.New(b).Cleanup(ctx); err != nil || n != 1 {
		t.Fatalf("Cleanup = %d, %v; want 1 expired lease", n, err)
	}
	grant(b, time.Minute).Release(ctx)

	// A new backend, as after a restart, continues from the files.
	b2, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	grant(b2, time.Minute).Release(ctx)
	if _, err := dlock.New(b2).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	b3, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	grant(b3, time.Minute)
}

// waitFree waits until key's lease has expired; used only where expiry is
// what the test is about.
func waitFree(t *testing.T, b dlock.Backend, key string) {
	t.Helper()
	for {
		_, found, err := b.Inspect(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCleanupKeepsLiveLeasesAndStats(t *testing.T) {
	ctx := t.Context()
	b, _ := newBackend(t)
	c := dlock.New(b)
	live, expiring := uniqueKey(t), uniqueKey(t)
	l, err := c.TryAcquire(ctx, live, dlock.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, expiring, dlock.WithTTL(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	waitFree(t, b, expiring)
	st, err := c.Stats(ctx)
	if err != nil || st.Total != 2 || st.Active != 1 || st.Expired != 1 {
		t.Errorf("Stats = %+v, %v; want 2 total, 1 active, 1 expired", st, err)
	}
	if n, err := c.Cleanup(ctx); err != nil || n != 1 {
		t.Fatalf("Cleanup = %d, %v; want 1", n, err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Errorf("Refresh of the live lease after Cleanup = %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("Release of the live lease after Cleanup = %v", err)
	}
}

// TestCleanupRaceNeverGivesTwoHolders runs holders, abandoned short leases
// and cleaners at once, over several Backends (each with its own cache of
// descriptors, like separate processes). Inside the critical section a flag
// detects overlap and fences must grow.
func TestCleanupRaceNeverGivesTwoHolders(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	backends := make([]*filelock.Backend, 4)
	for i := range backends {
		b, err := filelock.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		backends[i] = b
	}
	keys := []string{uniqueKey(t), uniqueKey(t), uniqueKey(t)}
	type state struct {
		inside    atomic.Bool
		mu        sync.Mutex
		lastFence uint64
		grants    int
	}
	states := make([]*state, len(keys))
	for i := range states {
		states[i] = new(state)
	}
	const rounds = 150
	var wg sync.WaitGroup
	var holders sync.WaitGroup
	stop := make(chan struct{})
	for g := range 8 {
		holders.Go(func() {
			c := dlock.New(backends[g%len(backends)], dlock.WithTTL(time.Minute))
			for i := range rounds {
				k := (g + i) % len(keys)
				st := states[k]
				if g%2 == 1 && i%3 == 0 {
					// Abandon a short lease for the cleaners to find.
					if _, err := c.TryAcquire(ctx, keys[k], dlock.WithTTL(dlock.MinTTL)); err != nil && !errors.Is(err, dlock.ErrNotAcquired) {
						t.Error(err)
						return
					}
					continue
				}
				l, err := c.Acquire(ctx, keys[k])
				if err != nil {
					t.Error(err)
					return
				}
				if !st.inside.CompareAndSwap(false, true) {
					t.Errorf("two holders of %q", keys[k])
				}
				st.mu.Lock()
				if l.Fence() <= st.lastFence {
					t.Errorf("fence %d granted after %d", l.Fence(), st.lastFence)
				}
				st.lastFence = l.Fence()
				st.grants++
				st.mu.Unlock()
				st.inside.Store(false)
				if err := l.Release(ctx); err != nil {
					t.Errorf("Release: %v", err)
				}
			}
		})
	}
	for g := range 3 {
		wg.Go(func() {
			c := dlock.New(backends[g%len(backends)])
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Cleanup(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	holders.Wait()
	close(stop)
	wg.Wait()
	total := 0
	for _, st := range states {
		total += st.grants
	}
	if total == 0 {
		t.Fatal("no grants")
	}
}

// TestDeadHolderTakeover uses a real process as the holder: a lease tied
// to it is freed at once when it dies, never while it lives, and never
// with takeover disabled or for a lease not tied to a process.
func TestDeadHolderTakeover(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("dead-holder takeover needs Linux's /proc")
	}
	ctx := t.Context()
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	start := func(t *testing.T) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sleep", "300")
		if err := cmd.Start(); err != nil {
			t.Skip("cannot start sleep:", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	hold := func(t *testing.T, b *filelock.Backend, key string, pid int) *dlock.Lock {
		t.Helper()
		l, err := dlock.New(b, dlock.WithOwner(dlock.Owner{Host: host, PID: pid})).
			TryAcquire(ctx, key, dlock.WithTTL(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tryOther := func(b *filelock.Backend, key string) error {
		_, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
		return err
	}

	t.Run("reaped", func(t *testing.T) {
		b, _ := newBackend(t)
		key := uniqueKey(t)
		cmd := start(t)
		held := hold(t, b, key, cmd.Process.Pid)
		if err := tryOther(b, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire while the holder lives = %v, want ErrNotAcquired", err)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		l, err := dlock.New(b).TryAcquire(ctx, key, dlock.WithTTL(time.Minute))
		if err != nil {
			t.Fatalf("TryAcquire after the holder died = %v, want a grant", err)
		}
		if l.Fence() <= held.Fence() {
			t.Errorf("takeover fence %d not above %d", l.Fence(), held.Fence())
		}
	})
	t.Run("zombie", func(t *testing.T) {
		b, _ := newBackend(t)
		key := uniqueKey(t)
		cmd := start(t)
		hold(t, b, key, cmd.Process.Pid)
		// Killed but not reaped: a zombie, dead all the same.
		_ = cmd.Process.Kill()
		for !isZombie(cmd.Process.Pid) {
			time.Sleep(time.Millisecond) // waiting for the kernel, not for our code
		}
		if err := tryOther(b, key); err != nil {
			t.Fatalf("TryAcquire after the holder became a zombie = %v, want a grant", err)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		b, _ := newBackend(t, filelock.WithDeadHolderTakeover(false))
		key := uniqueKey(t)
		cmd := start(t)
		hold(t, b, key, cmd.Process.Pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err := tryOther(b, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire with takeover disabled = %v, want ErrNotAcquired", err)
		}
		if n, err := dlock.New(b).Cleanup(ctx); err != nil || n != 0 {
			t.Errorf("Cleanup with takeover disabled = %d, %v; want 0", n, err)
		}
	})
	t.Run("pid 0", func(t *testing.T) {
		b, _ := newBackend(t)
		key := uniqueKey(t)
		hold(t, b, key, 0)
		if err := tryOther(b, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire of a lease not tied to a process = %v, want ErrNotAcquired", err)
		}
	})
	t.Run("other host", func(t *testing.T) {
		b, _ := newBackend(t)
		key := uniqueKey(t)
		cmd := start(t)
		l, err := dlock.New(b, dlock.WithOwner(dlock.Owner{Host: host + ".elsewhere", PID: cmd.Process.Pid})).
			TryAcquire(ctx, key, dlock.WithTTL(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		_ = l
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if err := tryOther(b, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("TryAcquire of another host's lease = %v, want ErrNotAcquired", err)
		}
	})
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func TestDefaultDir(t *testing.T) {
	t.Run("DLOCK_DIR", func(t *testing.T) {
		t.Setenv("DLOCK_DIR", "/some/where")
		if d, err := filelock.DefaultDir(); err != nil || d != "/some/where" {
			t.Errorf("DefaultDir = %q, %v; want /some/where", d, err)
		}
	})
	t.Run("cache dir", func(t *testing.T) {
		cache := t.TempDir()
		t.Setenv("DLOCK_DIR", "")
		t.Setenv("XDG_CACHE_HOME", cache)
		if d, err := filelock.DefaultDir(); err != nil || d != filepath.Join(cache, "dlock") {
			t.Errorf("DefaultDir = %q, %v; want %s/dlock", d, err, cache)
		}
	})
	t.Run("temp dir", func(t *testing.T) {
		tmp := t.TempDir()
		t.Setenv("DLOCK_DIR", "")
		t.Setenv("XDG_CACHE_HOME", "")
		t.Setenv("HOME", "")
		t.Setenv("TMPDIR", tmp)
		want := filepath.Join(tmp, "dlock-"+strconv.Itoa(os.Getuid()))
		d, err := filelock.DefaultDir()
		if err != nil || d != want {
			t.Fatalf("DefaultDir = %q, %v; want %s", d, err, want)
		}
		fi, err := os.Lstat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v, %v; want a 0700 directory", d, fi.Mode(), err)
		}
		if os.Getuid() == 0 {
			// Someone else owning the name must be refused.
			if err := os.Chown(d, 4242, 4242); err != nil {
				t.Fatal(err)
			}
			if _, err := filelock.DefaultDir(); !errors.Is(err, dlock.ErrUnavailable) || !strings.Contains(err.Error(), "owned by uid 4242") {
				t.Errorf("DefaultDir with the directory owned by another user = %v, want a refusal", err)
			}
		}
	})
}

// TestContextCancelled checks that a cancelled context stops every
// operation before it touches the file.
func TestContextCancelled(t *testing.T) {
	b, _ := newBackend(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	key := uniqueKey(t)
	if _, _, err := b.Acquire(ctx, dlock.AcquireRequest{Key: key, Token: "t", LockID: "l", TTL: time.Second}); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire = %v, want context.Canceled", err)
	}
	if _, _, err := b.Inspect(ctx, key); !errors.Is(err, context.Canceled) {
		t.Errorf("Inspect = %v, want context.Canceled", err)
	}
	if _, err := b.Cleanup(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Cleanup = %v, want nil (nothing to do) or context.Canceled", err)
	}
}

// TestSyncAndClose runs the state changes with WithSync, and checks that a
// closed backend (its cached descriptors gone) keeps working.
func TestSyncAndClose(t *testing.T) {
	ctx := t.Context()
	b, _ := newBackend(t, filelock.WithSync(true))
	c := dlock.New(b)
	key := uniqueKey(t)
	l, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release after Close = %v", err)
	}
	l2, err := c.TryAcquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Fence() <= l.Fence() {
		t.Errorf("fence %d after %d", l2.Fence(), l.Fence())
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOtherWriterSeen: a backend skips parsing a file that still holds the
// bytes it last wrote; one that another process (here another Backend,
// with its own descriptors) changed must be read again, or the first
// would grant a held key and reuse a fence.
func TestOtherWriterSeen(t *testing.T) {
	dir := t.TempDir()
	a, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := filelock.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := dlock.New(a), dlock.New(b)
	ctx := t.Context()
	const key = "shared"
	for round := range 3 {
		la, err := ca.TryAcquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Release(ctx); err != nil { // a's last write: the free record
			t.Fatal(err)
		}
		lb, err := cb.TryAcquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := ca.TryAcquire(ctx, key); !errors.Is(err, dlock.ErrNotAcquired) {
			t.Fatalf("round %d: a acquired %v (%v) a key b holds", round, l, err)
		}
		if err := lb.Release(ctx); err != nil {
			t.Fatal(err)
		}
		la, err = ca.TryAcquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if la.Fence() <= lb.Fence() {
			t.Fatalf("round %d: a's fence %d after b's %d", round, la.Fence(), lb.Fence())
		}
		if err := la.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
