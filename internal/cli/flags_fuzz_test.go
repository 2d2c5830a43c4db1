package cli

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseDuration feeds the parser of every duration flag (--ttl,
// --wait, --min-hold, ...) arbitrary text: it must never panic, never
// return a negative duration, call negative only what is negative, and
// read back what it accepted.
func FuzzParseDuration(f *testing.F) {
	for _, seed := range []string{"30s", "1.5", " 5m ", "0", "-1s", "-0", "1e9", "9.3e9", "NaN", "inf", "1h2m3.5s", "", "soon", "2562047h47m16.854775807s", "9223372036.854775807"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err != nil {
			if errors.Is(err, errNegative) && !strings.HasPrefix(strings.TrimSpace(s), "-") {
				t.Fatalf("parseDuration(%q): %v, but the input is not negative", s, err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("parseDuration(%q) = %v, negative", s, d)
		}
		if back, err := parseDuration(d.String()); err != nil || back != d {
			t.Fatalf("parseDuration(%q) = %v, which reads back as %v, %v", s, d, back, err)
		}
		if f, ferr := strconv.ParseFloat(strings.TrimSpace(s), 64); ferr == nil && f > 0 && d == 0 && f >= 1e-9 {
			t.Fatalf("parseDuration(%q) = 0 for %g seconds", s, f)
		}
	})
}
