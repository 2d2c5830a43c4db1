package backendurl

import (
	"errors"
	"testing"
)

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"h": "h:11211", "h:1": "h:1", "[::1]": "[::1]:11211", "[::1]:2": "[::1]:2", "10.0.0.1": "10.0.0.1:11211",
	} {
		if got, err := HostPort(in, "11211"); err != nil || got != want {
			t.Errorf("HostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":1", "h:", "a b", "[x/y]"} {
		if got, err := HostPort(in, "11211"); !errors.Is(err, ErrBad) {
			t.Errorf("HostPort(%q) = %q, %v; want ErrBad", in, got, err)
		}
	}
}
