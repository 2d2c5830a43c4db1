package dlock

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

// Limits that hold on every backend.
const (
	// MaxKeyLen is the longest key in bytes. Backends with shorter limits
	// (Memcached) encode keys so that every allowed key still works.
	MaxKeyLen = 1024

	// MinTTL is the shortest lease. Shorter ones leave no useful validity
	// once clock drift is subtracted.
	MinTTL = 10 * time.Millisecond

	// MaxTTL is the longest lease, the longest relative expiry Memcached
	// accepts. Use the watchdog ([WithAutoRefresh]) for longer holds.
	MaxTTL = 30 * 24 * time.Hour
)

// ValidateKey reports whether key may be used on every backend: 1 to
// [MaxKeyLen] bytes of valid UTF-8 without control characters. Spaces,
// slashes, dots and any printable Unicode are allowed. The error wraps
// [ErrInvalidKey].
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	}
	for i, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: control character %U at byte %d", ErrInvalidKey, r, i)
		}
	}
	return nil
}

// ValidateTTL reports whether ttl lies within [MinTTL, MaxTTL]. The error
// wraps [ErrInvalidTTL].
func ValidateTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL {
		return fmt.Errorf("%w: %v is outside %v..%v", ErrInvalidTTL, ttl, MinTTL, MaxTTL)
	}
	return nil
}

// newToken returns a 128-bit secret from crypto/rand as 32 hex digits.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// LockID derives the public id of a token: the first 16 hex digits of its
// SHA-256. It identifies a grant in output without revealing the token.
func LockID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}
