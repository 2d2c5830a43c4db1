package testserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL server started by [StartPostgres]: superuser
// postgres, trust authentication, bound to 127.0.0.1.
type Postgres struct {
	*Process
	// DataDir is the server's data directory. [Postgres.Restart] starts the
	// server again on the same one, so that committed rows survive, as on
	// a real crash and restart.
	DataDir string

	dir    string // holds DataDir and socket
	binary string
	socket string              // its own unix_socket_directories
	cred   *syscall.Credential // whom it runs as; nil: us
}

// StartPostgres starts a PostgreSQL server for t on a free loopback port,
// or skips t if PostgreSQL is not installed (fails it when CI=true), and
// waits until it answers a query. The server is killed and its data
// directory removed when t ends.
//
// It is tuned for tests, not for keeping data through a machine's crash:
// fsync and full page writes are off, and the data directory is on
// /dev/shm where there is one. Each server starts from a copy of a cluster
// that initdb made once per test binary: initdb takes a second, the copy
// milliseconds. As root the server runs as the postgres user, since
// PostgreSQL refuses to run as root.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	bin, err := findPostgresBin()
	if err != nil {
		notInstalled(t, "postgres")
	}
	pg, err := launchPostgres(bin)
	if err != nil {
		t.Fatalf("testserver: %v", err)
	}
	t.Cleanup(pg.Close)
	return pg
}

// LaunchPostgres is [StartPostgres] for a program that is not a test (the
// benchmarks of bench/peers): it returns an error where StartPostgres
// would skip or fail, and the caller calls [Postgres.Close] when done and
// [RemovePostgresTemplate] before it exits.
func LaunchPostgres() (*Postgres, error) {
	bin, err := findPostgresBin()
	if err != nil {
		return nil, err
	}
	return launchPostgres(bin)
}

func launchPostgres(bin string) (*Postgres, error) {
	cred, err := postgresUser()
	if err != nil {
		return nil, err
	}
	tmpl, err := postgresTemplate(bin, cred)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(tmpl), "srv-")
	if err != nil {
		return nil, fmt.Errorf("postgres data directory: %w", err)
	}
	pg := &Postgres{
		DataDir: filepath.Join(dir, "data"),
		dir:     dir,
		binary:  filepath.Join(bin, "postgres"),
		socket:  filepath.Join(dir, "sock"),
		cred:    cred,
	}
	err = chown(dir, cred)
	if err == nil {
		err = copyTree(tmpl, pg.DataDir)
	}
	if err == nil {
		err = os.Mkdir(pg.socket, 0o700)
	}
	if err == nil {
		err = chown(pg.socket, cred)
	}
	if err != nil {
		pg.Close()
		return nil, fmt.Errorf("postgres data directory: %w", err)
	}
	for try := 0; try < 5; try++ { // the free port may be taken in between
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		var p *Process
		if p, err = pg.start(port); err == nil {
			pg.Process = p
			return pg, nil
		}
	}
	pg.Close()
	return nil, fmt.Errorf("start postgres: %w", err)
}

// Close kills the server and removes its data directory. Safe to call
// twice.
func (pg *Postgres) Close() {
	if pg.Process != nil {
		pg.Process.Stop()
	}
	removeShm(filepath.Join(pg.DataDir, "postmaster.pid"))
	_ = os.RemoveAll(pg.dir)
}

// Restart kills the server (SIGKILL, with its backends) and starts it
// again on the same port and data directory, and waits until it answers a
// query: PostgreSQL recovers from its WAL, so committed rows survive,
// sessions and their advisory locks do not. It fails t if the port cannot
// be reused.
func (pg *Postgres) Restart(t testing.TB) {
	t.Helper()
	pg.Process.Stop()
	var err error
	for try := 0; try < 20; try++ {
		var p *Process
		if p, err = pg.start(pg.Port); err == nil {
			pg.Process = p
			t.Cleanup(p.Stop)
			return
		}
		time.Sleep(50 * time.Millisecond) // the old backends may take a moment to die
	}
	t.Fatalf("testserver: restart postgres on port %d: %v", pg.Port, err)
}

// DSN is the URL to connect to the server's postgres database as its
// superuser.
func (pg *Postgres) DSN() string { return pg.dsn(pg.Port) }

func (pg *Postgres) dsn(port int) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
}

func (pg *Postgres) args(port int) []string {
	return []string{
		"-D", pg.DataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=" + pg.socket,
		// Nothing here must outlive a machine's crash. synchronous_commit
		// stays on: without fsync it costs a write to tmpfs, and off it
		// would lose the last commits to Restart's SIGKILL.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200", // tests run many processes, each with a pool
		"-c", "shared_buffers=32MB",
		// Dynamic shared memory in the data directory rather than in
		// /dev/shm files, which a killed server would leave behind.
		"-c", "dynamic_shared_memory_type=mmap",
	}
}

// start runs the server on port and waits until it answers a query.
func (pg *Postgres) start(port int) (*Process, error) {
	p, err := launchAs(pg.binary, pg.args, port, pg.cred)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.waitSQL(ctx, p); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%w; output:\n%s", err, p.Output())
	}
	return p, nil
}

// waitSQL polls the server with a query until it answers: it accepts
// connections before it has recovered and can take queries. The answer
// must name our data directory, since another server may have taken the
// port between FreePort and ours failing to bind it.
func (pg *Postgres) waitSQL(ctx context.Context, p *Process) error {
	var last error
	for {
		dir, err := query(ctx, pg.dsn(p.Port), "SELECT current_setting('data_directory')")
		if err == nil && dir == pg.DataDir {
			return nil
		}
		if last = err; err == nil {
			last = fmt.Errorf("another server (data directory %s) answers on %s", dir, p.Addr)
		}
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited before answering queries (last: %w)", last)
		case <-ctx.Done():
			return fmt.Errorf("postgres on %s did not answer queries: %w (last: %w)", p.Addr, ctx.Err(), last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// query connects to dsn and returns the text of sql's one value.
func query(ctx context.Context, dsn, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

// findPostgresBin returns the directory of the postgres and initdb
// programs: the one on PATH, else that of the newest version in
// /usr/lib/postgresql (Debian keeps them off PATH).
func findPostgresBin() (string, error) {
	var dirs []string
	if path, err := exec.LookPath("postgres"); err == nil {
		dirs = append(dirs, filepath.Dir(path))
	}
	debian, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(debian, func(a, b string) int { return cmp.Compare(pgVersion(b), pgVersion(a)) })
	for _, dir := range append(dirs, debian...) {
		_, errPostgres := exec.LookPath(filepath.Join(dir, "postgres"))
		_, errInitdb := exec.LookPath(filepath.Join(dir, "initdb"))
		if errPostgres == nil && errInitdb == nil {
			return dir, nil
		}
	}
	return "", errors.New("PostgreSQL not installed: no postgres and initdb on PATH or in /usr/lib/postgresql/*/bin (run ./scripts/install-test-deps)")
}

// pgVersion is the version in /usr/lib/postgresql/VERSION/bin, as a
// number: "9.6" comes before "10".
func pgVersion(bin string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64)
	return v
}

// postgresUser is whom the server runs as: us (nil), unless we are root,
// which PostgreSQL refuses to be; then the postgres user that packages
// create.
func postgresUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL does not run as root, and there is no postgres user to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chown gives path to cred's user, who must own a server's directories;
// nil: they are ours already.
func chown(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Lchown(path, int(cred.Uid), int(cred.Gid))
}

// The template cluster, made once per test binary in
// shmOrTemp()/dlock-pg-PID/template; the servers' copies go next to it.
var pgTemplate struct {
	once sync.Once
	dir  string
	err  error
}

func postgresTemplate(bin string, cred *syscall.Credential) (string, error) {
	pgTemplate.once.Do(func() { pgTemplate.dir, pgTemplate.err = initTemplate(bin, cred) })
	return pgTemplate.dir, pgTemplate.err
}

// RemovePostgresTemplate removes the template cluster this process made,
// and the directory of its servers, which must all be closed. A program
// that is not a test calls it before it exits; test binaries leave theirs
// to the next one (see removeStale).
func RemovePostgresTemplate() {
	if pgTemplate.dir != "" {
		_ = os.RemoveAll(filepath.Dir(pgTemplate.dir))
	}
}

// initTemplate runs initdb into a new template directory. A test binary
// has no hook to remove the template when it exits, so it stays until the
// next test binary that starts PostgreSQL removes it (see removeStale).
func initTemplate(bin string, cred *syscall.Credential) (string, error) {
	removeStale()
	root := filepath.Join(shmOrTemp(), fmt.Sprintf("dlock-pg-%d", os.Getpid()))
	_ = os.RemoveAll(root) // left by an earlier process with our pid
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", fmt.Errorf("postgres template directory: %w", err)
	}
	tmpl := filepath.Join(root, "template")
	// 0755 whatever the umask: the postgres user must reach its
	// directories inside.
	err := os.Chmod(root, 0o755)
	if err == nil {
		err = os.Mkdir(tmpl, 0o700)
	}
	if err == nil {
		err = chown(tmpl, cred)
	}
	if err != nil {
		return "", fmt.Errorf("postgres template directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// 1MB WAL segments rather than 16MB: less to copy for each server.
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", tmpl,
		"--no-sync", "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--wal-segsize=1")
	cmd.Dir = root // the postgres user may not be able to read ours
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w; output:\n%s", err, out)
	}
	return tmpl, nil
}

// removeStale removes what test binaries that have exited left in
// shmOrTemp()/dlock-pg-PID: their templates, and when they were killed
// before their cleanups ran, their servers' data directories and the
// shared memory segments of those servers.
func removeStale() {
	roots, _ := filepath.Glob(filepath.Join(shmOrTemp(), "dlock-pg-*"))
	for _, root := range roots {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(root), "dlock-pg-"))
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // not ours, or its process still runs
		}
		pidFiles, _ := filepath.Glob(filepath.Join(root, "srv-*", "data", "postmaster.pid"))
		for _, f := range pidFiles {
			removeShm(f)
		}
		_ = os.RemoveAll(root)
	}
}

// removeShm removes the System V shared memory segment named in the lock
// file pidFile of a server that is no longer running. A server killed
// with SIGKILL leaves it (a graceful shutdown removes it and the file),
// and kernel.shmmni allows only a few thousand.
func removeShm(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	// Line 7 is "KEY ID" (see LOCK_FILE_LINE_SHMEM_KEY in PostgreSQL).
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return
	}
	key, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return
	}
	if id, err := strconv.Atoi(f[1]); err == nil {
		removeShmSegment(uint32(key), id)
	}
}

// copyTree copies the directory tree src to dst, which must not exist,
// keeping modes and, as root, owners: PostgreSQL wants its data directory
// its user's own and private.
func copyTree(src, dst string) error {
	root := os.Geteuid() == 0
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			err = os.Mkdir(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			var target string
			if target, err = os.Readlink(path); err == nil {
				err = os.Symlink(target, to)
			}
		default:
			err = copyFile(path, to, info.Mode().Perm())
		}
		if err != nil || !root {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		return os.Lchown(to, int(st.Uid), int(st.Gid))
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
