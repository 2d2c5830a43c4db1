package filelock

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleRecord() fileRecord {
	return fileRecord{
		Key:        "jobs/nightly \"backup\" ünï 🔒",
		Fence:      42,
		LockID:     "0123456789abcdef",
		TokenHash:  sha256.Sum256([]byte("token")),
		AcquiredAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		ExpiresAt:  time.Date(2026, 1, 2, 3, 4, 35, 6, time.UTC),
		Owner: fileOwner{
			Host: "web1", PID: 4242, StartTicks: 987654, PIDNS: "pid:[4026531836]",
			Label: "tab\there, newline\nthere, nul \x00, backslash \\",
		},
		BootID:      "b7c9dfc8-02bd-4209-bf6e-27f5881d018e",
		ExpiresMono: 123456789012,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	now := time.Now() // with a monotonic reading, as the backend writes
	for i, r := range []fileRecord{
		sampleRecord(), {Key: "free", Fence: 7}, {Key: "queued", Fence: 8, QueueNext: 12, FreedMono: 345}, {Key: "x", Fence: 1, LockID: "l", ExpiresAt: time.Unix(1, 0).UTC()},
		{Key: "now", Fence: 2, LockID: "l", AcquiredAt: now, ExpiresAt: now.Add(time.Minute).In(time.FixedZone("X", 3600)), BootID: "b", ExpiresMono: 5},
		// Lossy: invalid UTF-8, and a monotonic expiry without a boot id.
		{Key: "noboot", Fence: 3, LockID: "l\xff", AcquiredAt: now, ExpiresAt: now, ExpiresMono: 9, Owner: fileOwner{Label: "bad\xfe"}},
	} {
		line := appendRecord(nil, &r)
		if !json.Valid(line) || bytes.ContainsAny(line, "\n\r") {
			t.Fatalf("appendRecord wrote invalid JSON or a line break: %s", line)
		}
		got, err := parseRecord(line, nil)
		if err != nil {
			t.Fatalf("parseRecord(%s) = %v", line, err)
		}
		if back := r.readBack(); !reflect.DeepEqual(got, back) {
			t.Errorf("readBack\n got %+v\nwant %+v (parsed)", back, got)
		}
		if !got.AcquiredAt.Equal(r.AcquiredAt) || !got.ExpiresAt.Equal(r.ExpiresAt) {
			t.Errorf("times = %v %v, want %v %v", got.AcquiredAt, got.ExpiresAt, r.AcquiredAt, r.ExpiresAt)
		}
		got.AcquiredAt, got.ExpiresAt, r.AcquiredAt, r.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if lossy := i == 5; !lossy && got != r {
			t.Errorf("round trip\n got %+v\nwant %+v", got, r)
		}
	}
}

// TestParseAcceptsWhatEncodingJSONWrites: the file format is JSON, so a
// record rewritten by another tool (other field order, escapes, spacing,
// unknown fields) still parses.
func TestParseAcceptsWhatEncodingJSONWrites(t *testing.T) {
	in := `{ "unknown": [1, {"a": null}, true, -1.5e3],
		"owner": {"label": "\u00fc\ud83d\udd12\/", "pid": 12, "extra": false},
		"expires_at": "2026-01-02T03:04:05.000000006+01:00",
		"fence": 9, "key": "k\u0041", "lock_id": "id",
		"token_sha256": "` + strings.Repeat("ab", 32) + `" }   `
	r, err := parseRecord([]byte(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != "kA" || r.Fence != 9 || r.Owner.Label != "ü🔒/" || r.Owner.PID != 12 || r.ExpiresAt.Unix() != time.Date(2026, 1, 2, 2, 4, 5, 0, time.UTC).Unix() {
		t.Errorf("parsed %+v", r)
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		``, `{`, `[]`, `{"key":"k"}`, `{"fence":1}`, `{"key":"k","fence":-1}`,
		`{"key":"k","fence":1.5}`, `{"key":"k","fence":01}`, `{"key":"k","fence":1}x`,
		`{"key":"k","fence":18446744073709551616}`,
		`{"key":"k","fence":1,"lock_id":"l"}`,                                                   // a lease without a token hash
		`{"key":"k","fence":1,"lock_id":"l","token_sha256":"` + strings.Repeat("ab", 32) + `"}`, // nor expiry
		`{"key":"k","fence":1,"token_sha256":"abc"}`,
		`{"key":"k\x01","fence":1}`, `{"key":"\q","fence":1}`, `{"key":"\u12","fence":1}`,
		`{"key":"k","fence":1,"acquired_at":"yesterday"}`,
		`{"key":"k","fence":1,"owner":{"pid":"12"}}`,
		`{"key":"k","fence":1,"x":tru}`,
		`{"key":"k","fence":1,}`,
	} {
		if r, err := parseRecord([]byte(in), nil); err == nil {
			t.Errorf("parseRecord(%q) = %+v, want an error", in, r)
		}
	}
}

// FuzzRecord checks that any record is written as valid JSON that reads
// back unchanged, and that parsing arbitrary bytes never panics.
func FuzzRecord(f *testing.F) {
	s := sampleRecord()
	f.Add(s.Key, s.Owner.Label, s.Owner.Host, uint64(3), 5, []byte(appendRecord(nil, &s)))
	f.Add("", "\xff\xfe", "\u2028", uint64(0), -1, []byte(`{"key":"\ud800","fence":1}`))
	f.Fuzz(func(t *testing.T, key, label, host string, fence uint64, pid int, raw []byte) {
		_, _ = parseRecord(raw, nil) // must not panic
		r := sampleRecord()
		r.Key, r.Owner.Label, r.Owner.Host, r.Fence, r.Owner.PID = key, label, host, fence, pid
		r.QueueNext, r.FreedMono = fence/2, int64(pid) // a held record keeps no FreedMono
		if pid%2 == 0 {
			r = r.free(int64(pid))
		}
		line := appendRecord(nil, &r)
		if !json.Valid(line) || bytes.ContainsAny(line, "\n\r") {
			t.Fatalf("invalid JSON or line break: %q", line)
		}
		got, err := parseRecord(line, nil)
		if err != nil {
			t.Fatalf("parseRecord(%q) = %v", line, err)
		}
		if back := r.readBack(); !reflect.DeepEqual(got, back) {
			t.Fatalf("readBack disagrees with parsing\n got %+v\nwant %+v", back, got)
		}
		// Each invalid UTF-8 byte is written as U+FFFD, as encoding/json
		// does, which is what converting to runes gives too.
		if got.Key != string([]rune(key)) {
			t.Errorf("key %q read back as %q", key, got.Key)
		}
		if got.Fence != fence || (r.held() && got.Owner.PID != pid) {
			t.Errorf("fence/pid %d/%d read back as %d/%d", fence, pid, got.Fence, got.Owner.PID)
		}
		var std struct {
			Key   string `json:"key"`
			Owner struct {
				Label string `json:"label"`
			} `json:"owner"`
		}
		if err := json.Unmarshal(line, &std); err != nil || std.Key != got.Key || std.Owner.Label != got.Owner.Label {
			t.Errorf("encoding/json reads %q/%q (%v), we read %q/%q", std.Key, std.Owner.Label, err, got.Key, got.Owner.Label)
		}
	})
}
