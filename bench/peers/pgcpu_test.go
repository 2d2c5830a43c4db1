package main

import "testing"

// The postgres CPU counter finds the server's processes by parent and
// counts children that have exited from cutime and cstime; a command
// name may hold spaces and parentheses.
func TestStatFields(t *testing.T) {
	stat := "4242 (postgres: a) b) S 4200 4200 4200 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 500 1000 200 18446744073709551615\n"
	f, ok := statFields([]byte(stat))
	if !ok {
		t.Fatal("did not parse")
	}
	if f.ppid != 4200 || f.childTicks != 24 {
		t.Errorf("ppid %d, child ticks %d; want 4200 and 24", f.ppid, f.childTicks)
	}
	for _, bad := range []string{"", "4242 (x S 1 2", "4242 (x) S 1 2 3"} {
		if _, ok := statFields([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
