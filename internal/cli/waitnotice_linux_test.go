package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns a new pseudo-terminal: tty is the end a program writes
// to as its terminal, screen what a terminal emulator would read.
func openPTY(t *testing.T) (screen, tty *os.File) {
	t.Helper()
	screen, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { screen.Close() })
	var n int
	ctl := func(fd uintptr) {
		if err = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); err == nil {
			n, err = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	}
	raw, rerr := screen.SyscallConn()
	if rerr != nil {
		t.Fatal(rerr)
	}
	if cerr := raw.Control(ctl); cerr != nil || err != nil {
		t.Fatal(errors.Join(cerr, err))
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return screen, tty
}

// readScreen closes tty and returns all that was written to it.
func readScreen(t *testing.T, screen, tty *os.File) string {
	t.Helper()
	tty.Close()
	if err := screen.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err := io.Copy(&buf, screen)
	if err != nil && !errors.Is(err, syscall.EIO) { // EIO: the tty end is closed
		t.Fatal(err)
	}
	return strings.ReplaceAll(buf.String(), "\r\n", "\n")
}

// A run that must wait says so, naming the holder, when its stderr is a
// terminal; with -q, or when stderr is not a terminal (cron mails what a
// job prints), it says nothing.
func TestWaitNotice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		terminal bool
		flags    []string
		want     string
	}{
		{"terminal", true, nil, `dlock: "job" is locked by lock `},
		{"terminal, forever", true, []string{"--wait", "forever"}, "waiting until it is free"},
		{"terminal, quiet", true, []string{"-q"}, ""},
		{"not a terminal", false, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			out, _ := s.mustDlock(0, "acquire", "--ttl", "1h", "--label", "nightly import", "job")
			var stderr io.Writer = new(bytes.Buffer)
			var screen, tty *os.File
			if tc.terminal {
				screen, tty = openPTY(t)
				stderr = tty
			}
			args := append([]string{"--backend", s.url, "run", "--wait", "1m"}, tc.flags...)
			args = append(args, "job", "--", "true")
			code := make(chan int, 1)
			go func() { code <- Main(t.Context(), args, strings.NewReader(""), io.Discard, stderr) }()
			s.awaitWaiting("job", 1)
			s.mustDlock(0, "release", "job", strings.TrimSpace(out))
			if c := <-code; c != 0 {
				t.Fatalf("run after the holder released: exit %d", c)
			}
			var text string
			if tc.terminal {
				text = readScreen(t, screen, tty)
			} else {
				text = stderr.(*bytes.Buffer).String()
			}
			if tc.want == "" {
				if text != "" {
					t.Errorf("printed %q, want nothing", text)
				}
				return
			}
			if strings.Count(text, "\n") != 1 || !strings.Contains(text, tc.want) || !strings.Contains(text, `"nightly import"`) {
				t.Errorf("printed %q, want one line with %q naming the holder", text, tc.want)
			}
		})
	}
}
