package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// store is one file backend directory shared by the dlock invocations of a
// test.
type store struct {
	t   *testing.T
	url string
}

func newStore(t *testing.T) *store {
	t.Helper()
	return &store{t: t, url: "file://" + t.TempDir()}
}

// dlock runs Main in-process against the store and returns the exit
// status and both streams.
func (s *store) dlock(args ...string) (code int, stdout, stderr string) {
	s.t.Helper()
	return runMain(s.t, append([]string{"--backend", s.url}, args...)...)
}

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Main(t.Context(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// mustDlock runs dlock and fails the test unless it exits with want.
func (s *store) mustDlock(want int, args ...string) (stdout, stderr string) {
	s.t.Helper()
	code, stdout, stderr := s.dlock(args...)
	if code != want {
		s.t.Fatalf("dlock %q: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, stdout, stderr)
	}
	return stdout, stderr
}

// assertFree checks, with status, that key is not locked.
func (s *store) assertFree(key string) {
	s.t.Helper()
	if code, out, errOut := s.dlock("status", key); code != ExitNotHeld {
		s.t.Fatalf("status %q: exit %d, want 1 (free)\n%s%s", key, code, out, errOut)
	}
}

// waiting returns how many wait for key, as `status --json` counts them.
func (s *store) waiting(key string) int {
	s.t.Helper()
	out, _ := s.mustDlock(0, "status", "--json", key)
	var st struct {
		Waiting *int `json:"waiting"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Waiting == nil {
		s.t.Fatalf("status --json without a waiting count (%v):\n%s", err, out)
	}
	return *st.Waiting
}

// awaitWaiting returns once n wait for key (file backend, Linux: waiters
// queue); a minute bounds a broken run.
func (s *store) awaitWaiting(key string, n int) {
	s.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.waiting(key) != n {
		if time.Now().After(deadline) {
			s.t.Fatalf("never %d waiting for %q", n, key)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inspect returns key's lease as `status --json` reports it, nil if free.
func (s *store) inspect(key string) *leaseJSON {
	s.t.Helper()
	code, out, errOut := s.dlock("status", "--json", key)
	if code != ExitOK && code != ExitNotHeld {
		s.t.Fatalf("status %q: exit %d\n%s%s", key, code, out, errOut)
	}
	var st struct {
		Locked bool `json:"locked"`
		leaseJSON
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.t.Fatalf("status --json %q: %v\n%s", key, err, out)
	}
	if !st.Locked {
		return nil
	}
	return &st.leaseJSON
}

// assertNoLocks checks that nothing is locked in the store.
func (s *store) assertNoLocks() {
	s.t.Helper()
	out, _ := s.mustDlock(0, "list", "--json")
	if strings.TrimSpace(out) != "[]" {
		s.t.Fatalf("locks left behind: %s", out)
	}
}

// userFlow runs on s what a user would type on a new store: acquire,
// status, list, a contended run, release, a free run; the store ends
// empty.
func (s *store) userFlow() {
	t := s.t
	t.Helper()
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	token = strings.TrimSpace(token)
	out, _ := s.mustDlock(0, "status", "job")
	if !strings.Contains(out, "locked:    yes") {
		t.Errorf("status of a held key:\n%s", out)
	}
	if out, _ := s.mustDlock(0, "list"); !strings.Contains(out, "job") {
		t.Errorf("list:\n%s", out)
	}
	s.mustDlock(ExitConflict, "run", "job", "--", "true")
	s.mustDlock(0, "release", "job", token)
	s.mustDlock(0, "run", "job", "--", "true")
	s.assertFree("job")
	s.assertNoLocks()
}

// oneLineContaining checks that stderr is exactly one line containing want.
func oneLineContaining(t *testing.T, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not exactly one line: %q", stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not contain %q", stderr, want)
	}
	if !strings.HasPrefix(stderr, "dlock: ") {
		t.Errorf("stderr %q does not start with \"dlock: \"", stderr)
	}
}

func TestBadInput(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badFormat := filepath.Join(dir, "bad-format")
	if err := os.WriteFile(badFormat, []byte("\x7fELF\x00garbage"), 0o700); err != nil {
		t.Fatal(err)
	}
	aFile := filepath.Join(dir, "a-file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(tokenEnv, "")
	t.Setenv(backendEnv, "")

	long := strings.Repeat("k", 1025)
	tests := []struct {
		name string
		args []string // after --backend
		raw  bool     // args are complete (no --backend added)
		code int
		msg  string
	}{
		{"run without anything", []string{"run"}, false, ExitUsage, "missing KEY"},
		{"run without command", []string{"run", "k"}, false, ExitUsage, "missing COMMAND"},
		{"run with empty command list", []string{"run", "k", "--"}, false, ExitUsage, "missing COMMAND"},
		{"run without key", []string{"run", "--", "true"}, false, ExitUsage, "missing KEY"},
		{"run with two keys", []string{"run", "a", "b", "--", "true"}, false, ExitUsage, "expected one KEY before --"},
		{"run with empty command", []string{"run", "k", "--", ""}, false, ExitUsage, "empty COMMAND"},
		{"unknown flag", []string{"run", "--bogus", "k", "--", "true"}, false, ExitUsage, "unknown flag: --bogus"},
		{"ttl zero", []string{"run", "--ttl", "0", "k", "--", "true"}, false, ExitUsage, "--ttl must be positive"},
		{"ttl negative", []string{"run", "--ttl", "-1s", "k", "--", "true"}, false, ExitUsage, "negative duration"},
		{"ttl too short", []string{"acquire", "--ttl", "1ms", "k"}, false, ExitUsage, "outside 10ms"},
		{"ttl garbage", []string{"acquire", "--ttl", "soon", "k"}, false, ExitUsage, "not a duration"},
		{"wait negative", []string{"run", "--wait", "-5s", "k", "--", "true"}, false, ExitUsage, "negative duration"},
		{"grace negative", []string{"run", "--grace", "-1", "k", "--", "true"}, false, ExitUsage, "negative duration"},
		{"max hold negative", []string{"run", "--max-hold", "-1m", "k", "--", "true"}, false, ExitUsage, "negative duration"},
		{"min hold negative", []string{"run", "--min-hold", "-1m", "k", "--", "true"}, false, ExitUsage, "negative duration"},
		{"min hold too long", []string{"run", "--min-hold", "721h", "k", "--", "true"}, false, ExitUsage, "bad --min-hold: 721h0m0s is above 720h0m0s"},
		{"conflict code out of range", []string{"acquire", "-E", "300", "k"}, false, ExitUsage, "outside 0..255"},
		{"timeout negative", []string{"--timeout", "-3s", "status", "k"}, false, ExitUsage, "negative duration"},
		{"empty key", []string{"run", "", "--", "true"}, false, ExitUsage, "invalid key: empty"},
		{"over-long key", []string{"acquire", long}, false, ExitUsage, "longer than 1024"},
		{"control character in key", []string{"status", "a\nb"}, false, ExitUsage, "control character"},
		{"command not found", []string{"run", "k", "--", "no-such-command-dlock-test"}, false, ExitNotFound, "not found"},
		{"command path missing", []string{"run", "k", "--", filepath.Join(dir, "missing")}, false, ExitNotFound, "no such file"},
		{"command not executable", []string{"run", "k", "--", notExec}, false, ExitCannotExec, "permission denied"},
		{"command not runnable", []string{"run", "k", "--", badFormat}, false, ExitCannotExec, "exec format error"},
		{"timeout zero", []string{"--timeout", "0", "list"}, false, ExitUsage, "--timeout must be positive"},
		{"acquire without key", []string{"acquire"}, false, ExitUsage, "missing KEY"},
		{"status with two keys", []string{"status", "a", "b"}, false, ExitUsage, `unexpected argument "b"`},
		{"list with two prefixes", []string{"list", "a", "b"}, false, ExitUsage, `unexpected argument "b"`},
		{"release without token", []string{"release", "k"}, false, ExitUsage, "missing TOKEN"},
		{"refresh without anything", []string{"refresh"}, false, ExitUsage, "missing KEY and TOKEN"},
		{"refresh ttl zero", []string{"refresh", "--ttl", "0", "k", "tok"}, false, ExitUsage, "--ttl must be positive"},
		{"release with wrong token", []string{"release", "k", "0123"}, false, ExitNotHeld, "not held by this token"},
		{"break a free key", []string{"break", "--force", "k"}, false, ExitNotHeld, "not locked"},
		{"unknown command", []string{"lock", "k"}, false, ExitUsage, `unknown command "lock"`},
		{"misspelt command", []string{"stauts", "k"}, false, ExitUsage, `unknown command "stauts" for "dlock"; did you mean status or stats?`},
		{"unknown scheme", []string{"--backend", "nosuchstore://localhost:6379", "status", "k"}, true, ExitUsage,
			`unknown scheme "nosuchstore"; accepted schemes: etcd://, etcds://, file://`},
		{"no scheme", []string{"--backend", "/var/lib/dlock", "status", "k"}, true, ExitUsage, "no scheme; accepted schemes"},
		{"malformed URL", []string{"--backend", "file://[::1", "status", "k"}, true, ExitUsage, "accepted schemes"},
		{"file URL with host", []string{"--backend", "file://var/lib/dlock", "status", "k"}, true, ExitUsage, `host "var"`},
		{"file URL without directory", []string{"--backend", "file://", "status", "k"}, true, ExitUsage, "no directory"},
		{"unusable directory", []string{"--backend", "file://" + aFile + "/sub", "acquire", "k"}, true, ExitUnavailable, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !tt.raw {
				args = append([]string{"--backend", s.url}, args...)
			}
			code, stdout, stderr := runMain(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			oneLineContaining(t, stderr, tt.msg)
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
	s.assertNoLocks()
}

func TestBackendFromEnvironment(t *testing.T) {
	s := newStore(t)
	t.Setenv(backendEnv, s.url)
	code, tok, stderr := runMain(t, "acquire", "env-key")
	if code != 0 {
		t.Fatalf("acquire with $DLOCK_BACKEND: exit %d: %s", code, stderr)
	}
	// The lock is in the store named by the environment.
	s.mustDlock(ExitOK, "status", "env-key")
	s.mustDlock(ExitOK, "release", "env-key", strings.TrimSpace(tok))

	t.Setenv(backendEnv, "nosuchstore://nowhere")
	code, _, stderr = runMain(t, "status", "k")
	if code != ExitUsage {
		t.Errorf("bad $DLOCK_BACKEND: exit %d, want %d", code, ExitUsage)
	}
	oneLineContaining(t, stderr, `$DLOCK_BACKEND "nosuchstore://nowhere": unknown scheme "nosuchstore"`)
}

func TestFileURLForms(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for i, url := range []string{"file:rel/locks", "file://localhost" + dir + "/abs", "file:" + dir + "/abs"} {
		// The two absolute forms name the same directory, so the second
		// acquire of k there finds it held.
		want := []int{0, 0, ExitConflict}[i]
		if code, _, stderr := runMain(t, "--backend", url, "acquire", "k"); code != want {
			t.Errorf("--backend %s: exit %d, want %d: %s", url, code, want, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "rel", "locks")); err != nil {
		t.Errorf("file:rel/locks: %v", err)
	}
}

// release --min-hold keeps a lock acquired less than D ago until D after
// its acquisition, and frees one acquired longer ago; a wrong token is
// refused either way.
func TestReleaseMinHold(t *testing.T) {
	s := newStore(t)
	out, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "hourly")
	tok := strings.TrimSpace(out)
	s.mustDlock(ExitNotHeld, "release", "--min-hold", "1h", "hourly", "00000000000000000000000000000000")
	out, _ = s.mustDlock(0, "release", "--min-hold", "1h", "hourly", tok)
	if !strings.Contains(out, `kept "hourly" until`) {
		t.Errorf("release --min-hold 1h said %q", out)
	}
	rec := s.inspect("hourly")
	if rec == nil {
		t.Fatal("the key is free after release --min-hold 1h")
	}
	if kept := rec.ExpiresAt.Sub(rec.AcquiredAt); kept < time.Hour || kept > time.Hour+time.Minute {
		t.Errorf("kept until %v after the acquisition, want 1h plus the drift margin", kept)
	}
	if code, _, _ := s.dlock("run", "hourly", "--", "true"); code != ExitConflict {
		t.Errorf("a run within the hour: exit %d, want %d", code, ExitConflict)
	}
	// Acquired longer ago than the minimum hold: released.
	out, _ = s.mustDlock(0, "--json", "release", "--min-hold", "1ms", "hourly", tok)
	var res releaseJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Released || res.KeptUntil != nil {
		t.Errorf("release --min-hold 1ms --json = %s (%v), want released", out, err)
	}
	s.assertFree("hourly")
	s.mustDlock(ExitUsage, "release", "--min-hold", "-1s", "hourly", tok)
}

func TestAcquireRefreshRelease(t *testing.T) {
	s := newStore(t)
	out, _ := s.mustDlock(0, "acquire", "--ttl", "1h", "--label", "nightly", "jobs/a")
	tok := strings.TrimSpace(out)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(tok) {
		t.Fatalf("acquire printed %q, want only a 32-hex-digit token", out)
	}

	out, _ = s.mustDlock(ExitOK, "status", "jobs/a")
	for _, want := range []string{"locked:", "yes", "fence:", `"nightly"`, "expires:"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// A time of day, or a date and time when it falls on another day.
	if !regexp.MustCompile(`expires: +(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d \(in (59m|1h)`).MatchString(out) {
		t.Errorf("status does not say when the lock expires, relative:\n%s", out)
	}
	if strings.Contains(out, tok) {
		t.Errorf("status shows the token:\n%s", out)
	}

	// Someone else: refused with the holder named, exit 75 or -E.
	code, _, stderr := s.dlock("acquire", "jobs/a")
	if code != ExitConflict {
		t.Errorf("second acquire: exit %d, want %d", code, ExitConflict)
	}
	oneLineContaining(t, stderr, `"jobs/a" is locked by lock `)
	for _, want := range []string{"nightly", "host ", "since ", "until ", "ago)", "(in "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("conflict line lacks %q: %q", want, stderr)
		}
	}
	if code, _, _ := s.dlock("acquire", "-E", "3", "jobs/a"); code != 3 {
		t.Errorf("acquire -E 3 on a held key: exit %d, want 3", code)
	}
	if code, _, stderr := s.dlock("-q", "acquire", "jobs/a"); code != ExitConflict || stderr != "" {
		t.Errorf("acquire -q on a held key: exit %d, stderr %q; want %d and nothing", code, stderr, ExitConflict)
	}
	if code, _, stderr := s.dlock("acquire", "--wait", "50ms", "jobs/a"); code != ExitConflict ||
		!strings.Contains(stderr, "gave up after waiting 50ms") {
		t.Errorf("acquire --wait 50ms on a held key: exit %d, stderr %q", code, stderr)
	}

	out, _ = s.mustDlock(0, "refresh", "--ttl", "2h", "jobs/a", tok)
	if !strings.Contains(out, `refreshed "jobs/a"`) {
		t.Errorf("refresh said %q", out)
	}
	s.mustDlock(ExitNotHeld, "refresh", "jobs/a", "00000000000000000000000000000000")
	s.mustDlock(ExitNotHeld, "release", "jobs/a", "00000000000000000000000000000000")
	s.mustDlock(ExitOK, "status", "jobs/a") // the wrong token changed nothing

	// TOKEN may come from $DLOCK_TOKEN.
	t.Setenv(tokenEnv, tok)
	out, _ = s.mustDlock(0, "release", "jobs/a")
	if !strings.Contains(out, `released "jobs/a"`) {
		t.Errorf("release said %q", out)
	}
	s.assertFree("jobs/a")
	_, stderr = s.mustDlock(ExitNotHeld, "release", "jobs/a", tok)
	oneLineContaining(t, stderr, "not held by this token")
}

func TestJSON(t *testing.T) {
	s := newStore(t)
	var acq map[string]any
	out, _ := s.mustDlock(0, "acquire", "--json", "--ttl", "1m", "k")
	decode(t, out, &acq)
	for _, f := range []string{"key", "locked", "already_locked", "token", "lock_id", "fence", "acquired_at", "expires_at", "owner"} {
		if _, ok := acq[f]; !ok {
			t.Errorf("acquire --json lacks %q: %s", f, out)
		}
	}
	if acq["locked"] != true || acq["already_locked"] != false || acq["key"] != "k" {
		t.Errorf("acquire --json: %s", out)
	}
	tok, _ := acq["token"].(string)
	lockID, _ := acq["lock_id"].(string)

	var conflict map[string]any
	code, out, stderr := s.dlock("acquire", "--json", "k")
	if code != ExitConflict || stderr != "" {
		t.Errorf("acquire --json of a held key: exit %d, stderr %q", code, stderr)
	}
	decode(t, out, &conflict)
	if conflict["locked"] != false || conflict["already_locked"] != true || conflict["locked_by"] != lockID {
		t.Errorf("acquire --json conflict: %s", out)
	}
	if strings.Contains(out, tok) {
		t.Errorf("conflict JSON reveals the holder's token: %s", out)
	}

	var st map[string]any
	out, _ = s.mustDlock(0, "status", "--json", "k")
	decode(t, out, &st)
	if st["locked"] != true || st["lock_id"] != lockID || st["fence"] != acq["fence"] || st["token"] != nil {
		t.Errorf("status --json: %s", out)
	}

	var list []map[string]any
	out, _ = s.mustDlock(0, "list", "--json")
	decode(t, out, &list)
	if len(list) != 1 || list[0]["key"] != "k" || list[0]["lock_id"] != lockID {
		t.Errorf("list --json: %s", out)
	}

	var ref map[string]any
	out, _ = s.mustDlock(0, "refresh", "--json", "k", tok)
	decode(t, out, &ref)
	if ref["refreshed"] != true || ref["lock_id"] != lockID {
		t.Errorf("refresh --json: %s", out)
	}

	var stats map[string]any
	out, _ = s.mustDlock(0, "stats", "--json")
	decode(t, out, &stats)
	if stats["total_locks"] != 1.0 || stats["active_locks"] != 1.0 || stats["expired_locks"] != 0.0 {
		t.Errorf("stats --json: %s", out)
	}

	var rel map[string]any
	out, _ = s.mustDlock(0, "release", "--json", "k", tok)
	decode(t, out, &rel)
	if rel["released"] != true || rel["key"] != "k" {
		t.Errorf("release --json: %s", out)
	}
	out, _ = s.mustDlock(ExitNotHeld, "release", "--json", "k", tok)
	decode(t, out, &rel)
	if rel["released"] != false {
		t.Errorf("second release --json: %s", out)
	}
	out, _ = s.mustDlock(ExitNotHeld, "status", "--json", "k")
	st = nil
	decode(t, out, &st)
	if st["locked"] != false || st["lock_id"] != nil {
		t.Errorf("status --json of a free key: %s", out)
	}
	out, _ = s.mustDlock(0, "list", "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("list --json of nothing: %q, want []", out)
	}
	var ver map[string]any
	out, _ = s.mustDlock(0, "version", "--json")
	decode(t, out, &ver)
	if ver["version"] == "" || ver["go"] != runtime.Version() {
		t.Errorf("version --json: %s", out)
	}
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("not one JSON value: %v\n%s", err, s)
	}
}

func TestListStatsCleanup(t *testing.T) {
	s := newStore(t)
	out, _ := s.mustDlock(0, "list")
	if strings.TrimSpace(out) != "no locks" {
		t.Errorf("empty list said %q", out)
	}
	s.mustDlock(0, "acquire", "--ttl", "1h", "app/b")
	s.mustDlock(0, "acquire", "--ttl", "1h", "app/a")
	s.mustDlock(0, "acquire", "--ttl", "1h", "other")
	s.mustDlock(0, "acquire", "--ttl", "20ms", "app/short")

	out, _ = s.mustDlock(0, "list", "app/")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "KEY") ||
		!strings.HasPrefix(lines[1], "app/a ") || !strings.HasPrefix(lines[2], "app/b ") {
		t.Fatalf("list app/ is not a sorted table of app/ keys:\n%s", out)
	}
	if strings.Contains(out, "other") {
		t.Errorf("list app/ shows other keys:\n%s", out)
	}
	// Columns are aligned: every row's LOCK ID starts where the header's does.
	col := strings.Index(lines[0], "LOCK ID")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("row not aligned with header:\n%s\n%s", lines[0], l)
		}
	}

	// Wait for the short lease to expire: expiry is what is tested.
	time.Sleep(50 * time.Millisecond)
	out, _ = s.mustDlock(0, "stats")
	for _, want := range []string{"total:    4", "active:   3", "expired:  1"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats lacks %q:\n%s", want, out)
		}
	}
	out, _ = s.mustDlock(0, "cleanup")
	if strings.TrimSpace(out) != "removed 1 expired lock record" {
		t.Errorf("cleanup said %q", out)
	}
	out, _ = s.mustDlock(0, "cleanup", "--json")
	if strings.Join(strings.Fields(out), "") != `{"cleaned":0}` {
		t.Errorf("second cleanup --json said %q", out)
	}
}

func TestBreak(t *testing.T) {
	s := newStore(t)
	out, _ := s.mustDlock(0, "acquire", "--json", "--ttl", "1h", "--label", "stuck job", "k")
	var acq map[string]any
	decode(t, out, &acq)
	lockID := acq["lock_id"].(string)

	_, stderr := s.mustDlock(ExitUsage, "break", "k")
	oneLineContaining(t, stderr, "would break")
	for _, want := range []string{lockID, "stuck job", "--force"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("break without --force does not say %q: %q", want, stderr)
		}
	}
	s.mustDlock(ExitOK, "status", "k") // not broken

	out, _ = s.mustDlock(0, "break", "--force", "k")
	if !strings.Contains(out, `broke "k"`) || !strings.Contains(out, lockID) {
		t.Errorf("break --force said %q", out)
	}
	s.assertFree("k")
	s.mustDlock(ExitNotHeld, "release", "k", acq["token"].(string))
}

func TestRunInProcess(t *testing.T) {
	s := newStore(t)
	t.Run("environment", func(t *testing.T) {
		out, _ := s.mustDlock(0, "run", "--export-token", "env", "--", "sh", "-c",
			`echo "$DLOCK_KEY|$DLOCK_FENCE|$DLOCK_LOCK_ID|$DLOCK_TOKEN|$DLOCK_BACKEND"`)
		f := strings.Split(strings.TrimSpace(out), "|")
		if len(f) != 5 || f[0] != "env" || f[1] == "" || len(f[2]) != 16 || len(f[3]) != 32 || f[4] != s.url {
			t.Errorf("child environment: %q", out)
		}
		out, _ = s.mustDlock(0, "run", "env", "--", "sh", "-c", `echo "${DLOCK_TOKEN-unset}"`)
		if strings.TrimSpace(out) != "unset" {
			t.Errorf("token given without --export-token: %q", out)
		}
		// Arguments reach the child as given, without a shell.
		out, _ = s.mustDlock(0, "run", "env", "--", "printf", "%s|", "a b", "$HOME", "*")
		if out != "a b|$HOME|*|" {
			t.Errorf("arguments changed on the way: %q", out)
		}
	})
	t.Run("exit status passes through", func(t *testing.T) {
		s.mustDlock(7, "run", "code", "--", "sh", "-c", "exit 7")
		s.mustDlock(128+9, "run", "code", "--", "sh", "-c", "kill -KILL $$")
		s.assertFree("code")
	})
	t.Run("held", func(t *testing.T) {
		out, _ := s.mustDlock(0, "acquire", "--ttl", "1h", "held")
		code, stdout, stderr := s.dlock("run", "held", "--", "echo", "ran")
		if code != ExitConflict || stdout != "" {
			t.Errorf("run on a held key: exit %d, stdout %q", code, stdout)
		}
		oneLineContaining(t, stderr, `"held" is locked by lock`)
		if code, _, stderr := s.dlock("run", "-q", "--conflict-exit-code", "0", "held", "--", "echo", "ran"); code != 0 || stderr != "" {
			t.Errorf("run -q -E 0 on a held key: exit %d, stderr %q", code, stderr)
		}
		s.mustDlock(0, "release", "held", strings.TrimSpace(out))
	})
	t.Run("max hold", func(t *testing.T) {
		code, _, stderr := s.dlock("run", "--max-hold", "100ms", "--grace", "5s", "maxhold", "--", "sleep", "60")
		if code != ExitLost {
			t.Errorf("run --max-hold: exit %d, want %d", code, ExitLost)
		}
		oneLineContaining(t, stderr, "gave up the lock on \"maxhold\"")
		s.assertFree("maxhold")
	})
	t.Run("lock broken, child ignores SIGTERM", func(t *testing.T) {
		stdin, keepOpen, err := os.Pipe() // the child waits for EOF, which never comes
		if err != nil {
			t.Fatal(err)
		}
		defer keepOpen.Close()
		defer stdin.Close()
		outR, outW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer outR.Close()
		var errOut bytes.Buffer
		args := append([]string{"--backend", s.url, "run", "--ttl", "2s", "--grace", "100ms", "broken", "--"},
			childArgv(t, "ignore-term")...)
		codeCh := make(chan int, 1)
		go func() {
			codeCh <- Main(t.Context(), args, stdin, outW, &errOut)
			outW.Close()
		}()
		ready, err := bufio.NewReader(outR).ReadString('\n')
		if !strings.HasPrefix(ready, "ready ") {
			t.Fatalf("child did not start: %q, %v", ready, err)
		}
		s.mustDlock(0, "break", "--force", "broken")
		if code := <-codeCh; code != ExitLost {
			t.Errorf("exit %d, want %d; stderr %q", code, ExitLost, errOut.String())
		}
		if !strings.Contains(errOut.String(), `lost the lock on "broken"`) || !strings.Contains(errOut.String(), "sending SIGKILL") {
			t.Errorf("stderr does not tell the loss and the SIGKILL: %q", errOut.String())
		}
		s.assertFree("broken")
	})
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runMain(t, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, want := range []string{"file:///abs/dir", "per-user directory", "DLOCK_BACKEND", "Exit status:", "79", "run", "acquire", "completion"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	code, out, _ = runMain(t, "help", "run")
	if code != 0 || !strings.Contains(out, "--max-hold") || !strings.Contains(out, "DLOCK_FENCE") {
		t.Errorf("help run: exit %d\n%s", code, out)
	}
	code, out, _ = runMain(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash: exit %d", code)
	}
	code, out, _ = runMain(t, "version")
	if code != 0 || !strings.HasPrefix(out, "dlock ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"30s", 30 * time.Second, false},
		{"1m30s", 90 * time.Second, false},
		{"10", 10 * time.Second, false},
		{"2.5", 2500 * time.Millisecond, false},
		{"0", 0, false},
		{"-1", 0, true},
		{"-1s", 0, true},
		{"soon", 0, true},
		{"1e300", 0, true},
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestHumanTime(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.Local)
	tests := []struct {
		t    time.Time
		want string
	}{
		{now.Add(12 * time.Second), "in 12s"},
		{now.Add(-3 * time.Minute), "3m0s ago"},
		{now.Add(850 * time.Millisecond), "in 850ms"},
		{now.Add(2*time.Hour + 5*time.Minute), "in 2h5m"},
		{now.Add(50 * time.Hour), "in 2d2h"},
	}
	for _, tt := range tests {
		if got := relTime(tt.t, now); got != tt.want {
			t.Errorf("relTime(%v) = %q, want %q", tt.t.Sub(now), got, tt.want)
		}
	}
	if got := clock(now.Add(time.Minute), now); got != "12:01:00" {
		t.Errorf("clock today = %q", got)
	}
	if got := clock(now.Add(48*time.Hour), now); got != "2025-06-03 12:00:00" {
		t.Errorf("clock another day = %q", got)
	}
}

func TestCommandLineLabel(t *testing.T) {
	if got := commandLine([]string{"sh", "-c", "echo 'hi'"}); got != `sh -c 'echo '\''hi'\'''` {
		t.Errorf("commandLine quoted = %q", got)
	}
	long := commandLine([]string{strings.Repeat("é", 100)})
	if len(long) > maxLabel || !strings.HasSuffix(long, "...") || !utf8Valid(long) {
		t.Errorf("long label %q (%d bytes)", long, len(long))
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// oneLine drops the core's "dlock: " prefix where it starts a word, but
// not the end of a backend's prefix such as "etcdlock: ".
func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"dlock: acquire \"a\": dlock: not held.":       `acquire "a": not held`,
		"etcdlock: inspect \"job\": store unavailable": `etcdlock: inspect "job": store unavailable`,
		"dlock: redislock: x\n  joined: dlock: y":      "redislock: x joined: y",
		"backend (dlock: z)":                           "backend (z)",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStatusCountsWaiting: on the file backend, status says how many runs
// wait for a key (--json: "waiting"), and a waiter that got the key is no
// longer counted.
func TestStatusCountsWaiting(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the file backend queues waiters on Linux only")
	}
	s := newStore(t)
	token, _ := s.mustDlock(0, "acquire", "--ttl", "1m", "-q", "job")
	type result struct {
		code          int
		token, errOut string
	}
	got := make(chan result, 1)
	go func() {
		code, out, errOut := s.dlock("acquire", "--ttl", "1m", "--wait", "1m", "-q", "job")
		got <- result{code, strings.TrimSpace(out), errOut}
	}()
	s.awaitWaiting("job", 1)
	if out, _ := s.mustDlock(0, "status", "job"); !regexp.MustCompile(`waiting:\s+1\n`).MatchString(out) {
		t.Errorf("status of a key with one waiter:\n%s", out)
	}
	s.mustDlock(0, "release", "job", strings.TrimSpace(token))
	r := <-got
	if r.code != 0 {
		t.Fatalf("waiting acquire: exit %d: %s", r.code, r.errOut)
	}
	if n := s.waiting("job"); n != 0 {
		t.Errorf("waiting after the waiter got the key = %d, want 0", n)
	}
	s.mustDlock(0, "release", "job", r.token)
}
