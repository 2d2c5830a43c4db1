package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/dlock-dev/dlock"
)

// etcdForms describe the etcd URLs in help.
var etcdForms = []string{
	"etcd://[user:pass@]h1:p1[,h2:p2...]   etcd backend (default port 2379): sound fences",
	"                         ?prefix=P (default dlock/)  ?timeout=D per operation (default --timeout)",
	"etcds://...              the same over TLS: ?cacert=FILE (else the system's roots),",
	"                         ?cert=FILE&key=FILE for a client certificate (see docs/etcd.md)",
}

// dlockEtcd is the command that has the etcd backend: dlock with the etcd
// client linked in (cmd/dlock-etcd).
const dlockEtcd = "dlock-etcd"

func init() {
	// The etcd client's gRPC and protobuf packages double the start-up
	// time of every process that links them (7 to 14 ms on a two-core VM),
	// which dlock stress's thousand processes on the file backend feel: 5.5
	// to 8.6 s of launch spread. So dlock hands etcd:// URLs over to
	// dlock-etcd, which registers the real opener (internal/etcdurl).
	forms := append([]string(nil), etcdForms...)
	forms[0] += " (runs " + dlockEtcd + ")"
	registerEtcd(handOverToDlockEtcd, forms)
}

// RegisterEtcd makes etcd:// and etcds:// URLs open with open, for
// dlock-etcd, before Main is called.
func RegisterEtcd(open func(ctx context.Context, u *url.URL) (dlock.Backend, error)) {
	registerEtcd(open, etcdForms)
}

func registerEtcd(open func(ctx context.Context, u *url.URL) (dlock.Backend, error), forms []string) {
	registerBackend("etcds", open, nil) // described under etcd
	registerBackend("etcd", open, forms)
}

// handOverToDlockEtcd replaces this process with dlock-etcd, given the same
// arguments and environment: the one next to this executable, else the one
// on $PATH. It returns only if there is none, or the exec failed.
func handOverToDlockEtcd(_ context.Context, _ *url.URL) (dlock.Backend, error) {
	path, err := findDlockEtcd(os.Executable, exec.LookPath)
	if err != nil {
		return nil, err
	}
	argv := append([]string{path}, os.Args[1:]...)
	return nil, fmt.Errorf("run %s: %w", path, syscall.Exec(path, argv, os.Environ()))
}

// findDlockEtcd looks for dlock-etcd next to this executable, then on
// $PATH.
func findDlockEtcd(self func() (string, error), lookPath func(string) (string, error)) (string, error) {
	if exe, err := self(); err == nil {
		next := filepath.Join(filepath.Dir(exe), dlockEtcd)
		if fi, err := os.Stat(next); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return next, nil
		}
	}
	if path, err := lookPath(dlockEtcd); err == nil {
		return path, nil
	}
	return "", errors.New("etcd:// is served by " + dlockEtcd + ", the dlock command with the etcd client, " +
		"which is neither next to this dlock nor on $PATH: go install github.com/dlock-dev/dlock/cmd/dlock-etcd " +
		"(or go run ./cmd/dlock-etcd in a checkout); see docs/etcd.md")
}
