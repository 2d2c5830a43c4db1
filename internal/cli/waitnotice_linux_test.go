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

	"github.com/dlock-dev/dlock/internal/testserver"
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

// awaitScreen reads what is written to the terminal until a line contains
// want, and returns everything read.
func awaitScreen(t *testing.T, screen *os.File, want string) string {
	t.Helper()
	if err := screen.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(text.String(), want) {
		n, err := screen.Read(buf)
		text.Write(buf[:n])
		if err != nil {
			t.Fatalf("terminal: %v; read so far: %q", err, text.String())
		}
	}
	return strings.ReplaceAll(text.String(), "\r\n", "\n")
}

// A run whose store goes away while it waits says so on a terminal, once,
// and goes on waiting: it runs COMMAND once the store is back (empty, so
// the key is free).
func TestOutageNotice(t *testing.T) {
	srv := testserver.StartRedis(t)
	s := &store{t: t, url: "redis://" + srv.Addr + "?fifo=1&dial_timeout=100ms"}
	s.mustDlock(0, "acquire", "--ttl", "1h", "-q", "job")
	screen, tty := openPTY(t)
	args := []string{"--backend", s.url, "--timeout", "1s", "run", "--wait", "1m", "job", "--", "true"}
	code := make(chan int, 1)
	go func() { code <- Main(t.Context(), args, strings.NewReader(""), io.Discard, tty) }()
	s.awaitWaiting("job", 1)
	srv.Stop()
	notice := awaitScreen(t, screen, "still waiting up to 1m0s")
	srv.StartAgain(t)
	if c := <-code; c != 0 {
		t.Fatalf("run after the store came back: exit %d", c)
	}
	text := notice + readScreen(t, screen, tty)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"job" is locked by`) ||
		!strings.HasPrefix(lines[1], `dlock: store unavailable while waiting for "job" (redislock: `) || !strings.HasSuffix(lines[1], "); still waiting up to 1m0s") {
		t.Errorf("printed %q, want the holder's line, then one saying the store is unavailable and why", text)
	}
}
