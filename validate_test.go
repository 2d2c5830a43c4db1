package dlock_test

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dlock-dev/dlock"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		name string
		key  string
		ok   bool
	}{
		{"simple", "jobs/nightly", true},
		{"one byte", "k", true},
		{"max length", strings.Repeat("k", dlock.MaxKeyLen), true},
		{"max length multibyte", strings.Repeat("é", dlock.MaxKeyLen/2), true},
		{"spaces", "  a key  ", true},
		{"dots and slashes", "../../etc/passwd", true},
		{"backslash", `C:\lock`, true},
		{"unicode", "日本語🔒", true},
		{"NBSP (not a control)", "a\u00a0b", true},
		{"empty", "", false},
		{"too long", strings.Repeat("k", dlock.MaxKeyLen+1), false},
		{"too long multibyte", strings.Repeat("é", dlock.MaxKeyLen/2) + "k", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated rune", "日本"[:4], false},
		{"NUL", "a\x00b", false},
		{"tab", "a\tb", false},
		{"newline", "key\n", false},
		{"carriage return", "\rkey", false},
		{"escape", "\x1b[31mred", false},
		{"DEL", "a\x7f", false},
		{"C1 NEL", "a\u0085", false},
		{"C1 last", "a\u009f", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := dlock.ValidateKey(tt.key)
			if tt.ok && err != nil {
				t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
			}
			if !tt.ok && !errors.Is(err, dlock.ErrInvalidKey) {
				t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
			}
		})
	}
}

func TestValidateTTL(t *testing.T) {
	tests := []struct {
		ttl time.Duration
		ok  bool
	}{
		{dlock.MinTTL, true},
		{time.Second, true},
		{dlock.DefaultTTL, true},
		{dlock.MaxTTL, true},
		{0, false},
		{-time.Second, false},
		{dlock.MinTTL - time.Nanosecond, false},
		{dlock.MaxTTL + time.Nanosecond, false},
		{-1 << 63, false},
		{1<<63 - 1, false},
	}
	for _, tt := range tests {
		err := dlock.ValidateTTL(tt.ttl)
		if tt.ok && err != nil {
			t.Errorf("ValidateTTL(%v) = %v, want nil", tt.ttl, err)
		}
		if !tt.ok && !errors.Is(err, dlock.ErrInvalidTTL) {
			t.Errorf("ValidateTTL(%v) = %v, want ErrInvalidTTL", tt.ttl, err)
		}
	}
}

func TestLockID(t *testing.T) {
	const token = "00112233445566778899aabbccddeeff"
	id := dlock.LockID(token)
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("LockID = %q, want 16 hex digits", id)
	}
	if strings.Contains(token, id) {
		t.Errorf("LockID %q is part of the token", id)
	}
	if dlock.LockID(token) != id {
		t.Error("LockID is not deterministic")
	}
	if dlock.LockID("00112233445566778899aabbccddeefe") == id {
		t.Error("different tokens give the same LockID")
	}
}

// FuzzValidateKey checks that ValidateKey never panics and accepts exactly
// the keys its documentation allows.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"", "a", "jobs/nightly", "../x", "a\x00", "\xff", "日本語", "a\u0085", strings.Repeat("k", dlock.MaxKeyLen)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := dlock.ValidateKey(key)
		documented := key != "" && len(key) <= dlock.MaxKeyLen && utf8.ValidString(key) &&
			strings.IndexFunc(key, unicode.IsControl) < 0
		switch {
		case documented && err != nil:
			t.Errorf("ValidateKey(%q) rejected an allowed key: %v", key, err)
		case !documented && err == nil:
			t.Errorf("ValidateKey(%q) accepted a key the rules forbid", key)
		case err != nil && !errors.Is(err, dlock.ErrInvalidKey):
			t.Errorf("ValidateKey(%q) = %v, does not match ErrInvalidKey", key, err)
		}
	})
}
