// Command peers runs the scenarios of `dlock bench` for dlock and for the
// libraries its users would otherwise pick, in one run and on the same
// servers, and prints them side by side with each figure's ratio to the
// best peer:
//
//	cd bench/peers && go run . --duration 5s
//
// Redis group: dlock's redislock (default and FIFO), go-redsync/redsync
// and bsm/redislock, on a redis-server the program starts on a free
// loopback port (or on --redis ADDR, which should be a server nothing else
// uses, since commands are counted server-wide). File group: dlock's
// filelock and gofrs/flock, in scratch directories under --dir. etcd
// group: dlock's etcdlock and etcd's own client/v3/concurrency Mutex, on
// a one-member etcd the program starts on free loopback ports with its
// data on /dev/shm (or on --etcd ENDPOINT, which should be a member
// nothing else uses, since its requests are counted server-wide). Redlock
// group: dlock's redlock (with and without FIFO) and redsync, each over
// three more redis-servers the program starts (--no-redlock skips them). PostgreSQL group: dlock's
// pglock and hand-rolled session-level advisory locks, on a PostgreSQL
// the program starts as the tests do (internal/testserver: a free
// loopback port, data on /dev/shm, fsync off) or on --postgres DSN.
//
// It is a module of its own so that the peers never become dependencies
// of dlock; it imports the scenarios from dlock's internal/bench through a
// replace directive, so the figures come from the same code as
// `dlock bench` and `go test -bench`. Within a scenario the subjects take
// turns in short rounds (--rounds) and each one's median round is
// reported, so that load drifting on a shared machine hits all alike. See
// docs/bench.md.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/bench"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/redislock"
	"github.com/dlock-dev/dlock/redlock"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	duration  time.Duration
	workers   int
	rounds    int
	hold      time.Duration
	scenario  string
	redisAddr string
	noRedis   bool
	noFile    bool
	etcdAddr  string
	noEtcd    bool
	noRedlock bool
	pgDSN     string
	noPg      bool
	dir       string
	json      bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.duration, "duration", bench.DefaultDuration, "how long each scenario runs for each subject")
	fs.IntVar(&o.workers, "workers", bench.DefaultWorkers, "goroutines in parallel and contended")
	fs.IntVar(&o.rounds, "rounds", 3, "split each subject's --duration into this many rounds, interleaved with the other subjects'; report the median round")
	fs.DurationVar(&o.hold, "hold", bench.DefaultHold, "time a contended worker holds the lock (0: release at once)")
	fs.StringVar(&o.scenario, "scenario", "all", "serial, parallel, contended or all")
	fs.StringVar(&o.redisAddr, "redis", "", "host:port of a Redis server nothing else uses (default: start redis-server on a free port)")
	fs.BoolVar(&o.noRedis, "no-redis", false, "skip the Redis group")
	fs.BoolVar(&o.noFile, "no-file", false, "skip the file group")
	fs.StringVar(&o.etcdAddr, "etcd", "", "client URL (http://host:port) of a one-member etcd nothing else uses (default: start etcd on free ports)")
	fs.BoolVar(&o.noEtcd, "no-etcd", false, "skip the etcd group")
	fs.BoolVar(&o.noRedlock, "no-redlock", false, "skip the Redlock group (three more redis-servers)")
	fs.StringVar(&o.pgDSN, "postgres", "", "URL or DSN of a PostgreSQL database nothing else locks in (default: initdb and start postgres on a free port)")
	fs.BoolVar(&o.noPg, "no-postgres", false, "skip the PostgreSQL group")
	fs.StringVar(&o.dir, "dir", os.TempDir(), "directory for the file group's scratch directories")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 64
	}
	if err := o.check(fs); err != nil {
		fmt.Fprintln(stderr, "peers:", err)
		return 64
	}
	if err := compare(ctx, o, args, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "peers:", err)
		return 1
	}
	return 0
}

func (o *options) check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.duration <= 0:
		return errors.New("--duration must be positive")
	case o.workers < 1:
		return errors.New("--workers must be at least 1")
	case o.rounds < 1 || o.duration/time.Duration(o.rounds) < 100*time.Millisecond:
		return errors.New("--rounds must be at least 1, and --duration/--rounds at least 100ms")
	case o.hold < 0:
		return errors.New("--hold must not be negative")
	case o.scenario != "all" && o.scenario != string(bench.Serial) &&
		o.scenario != string(bench.Parallel) && o.scenario != string(bench.Contended):
		return fmt.Errorf("bad --scenario %q: use serial, parallel, contended or all", o.scenario)
	}
	return nil
}

// median returns the round with the median ops/s, carrying the violations
// and fence regressions of every round: a violation in any round counts.
func median(rounds []bench.Result) bench.Result {
	sorted := slices.Clone(rounds)
	slices.SortFunc(sorted, func(a, b bench.Result) int { return cmp.Compare(a.PerSecond, b.PerSecond) })
	m := sorted[len(sorted)/2]
	m.Violations, m.FenceRegressions = 0, 0
	for _, r := range rounds {
		m.Violations += r.Violations
		m.FenceRegressions += r.FenceRegressions
	}
	return m
}

// group is a set of subjects on one store, compared with each other.
type group struct {
	name     string
	subjects []bench.Subject
}

func compare(ctx context.Context, o options, args []string, stdout, stderr io.Writer) error {
	report := bench.Report{Machine: bench.ThisMachine()}
	report.Notes = append(report.Notes,
		"command: go run . "+strings.Join(args, " ")+" (in bench/peers)")
	var groups []group
	floorTime := min(o.duration/2, time.Second)

	if !o.noFile {
		g, cleanup, err := fileGroup(ctx, o, floorTime, &report)
		if err != nil {
			return err
		}
		defer cleanup()
		groups = append(groups, g)
	}
	if !o.noRedis {
		addr := o.redisAddr
		if addr == "" {
			srv, err := startRedis(ctx)
			if err != nil {
				return err
			}
			defer srv.stop()
			addr = srv.addr
		}
		g, cleanup, err := redisGroup(ctx, addr, floorTime, &report)
		if err != nil {
			return err
		}
		defer cleanup()
		groups = append(groups, g)
	}
	if !o.noEtcd {
		endpoint := o.etcdAddr
		if endpoint == "" {
			srv, err := startEtcd(ctx)
			if err != nil {
				return err
			}
			defer srv.stop()
			endpoint = srv.endpoint
		}
		g, cleanup, err := etcdGroup(ctx, endpoint, floorTime, &report)
		if err != nil {
			return err
		}
		defer cleanup()
		groups = append(groups, g)
	}
	if !o.noPg {
		dsn, pid := o.pgDSN, 0
		if dsn == "" {
			srv, err := testserver.LaunchPostgres()
			if err != nil {
				return fmt.Errorf("peers: %w (or pass --postgres DSN, or --no-postgres)", err)
			}
			defer testserver.RemovePostgresTemplate()
			defer srv.Close()
			dsn, pid = srv.DSN(), srv.Pid()
		}
		g, cleanup, err := postgresGroup(ctx, dsn, pid, floorTime, &report)
		if err != nil {
			return err
		}
		defer cleanup()
		groups = append(groups, g)
	}

	if !o.noRedlock {
		var addrs []string
		for range 3 {
			srv, err := startRedis(ctx)
			if err != nil {
				return err
			}
			defer srv.stop()
			addrs = append(addrs, srv.addr)
		}
		g, cleanup, err := redlockGroup(addrs)
		if err != nil {
			return err
		}
		defer cleanup()
		groups = append(groups, g)
	}

	cfg := bench.Config{Workers: o.workers, Duration: o.duration, Hold: o.hold}
	if o.hold == 0 {
		cfg.Hold = -1 // Config's zero means the default
	}
	scenarios := bench.Scenarios
	if o.scenario != "all" {
		scenarios = []bench.Scenario{bench.Scenario(o.scenario)}
	}
	// Scenario by scenario, the subjects of a group take turns in short
	// rounds (each round starting with the next subject), so that a machine
	// whose load drifts during the run affects them alike; each subject's
	// median round is reported, with the violations of all its rounds.
	cfg.Duration = o.duration / time.Duration(o.rounds)
	report.Notes = append(report.Notes, fmt.Sprintf(
		"each figure: the median (by ops/s) of %d interleaved rounds of %v per subject", o.rounds, cfg.Duration))
	for _, sc := range scenarios {
		for _, g := range groups {
			rounds := make([][]bench.Result, len(g.subjects))
			for r := range o.rounds {
				for k := range g.subjects {
					i := (k + r) % len(g.subjects)
					s := g.subjects[i]
					fmt.Fprintf(stderr, "peers: %s %s %s, round %d of %d, %v\n", g.name, s.Name, sc, r+1, o.rounds, cfg.Duration)
					c := cfg
					c.Prefix = "dlock-bench/" + strings.ReplaceAll(s.Name, "/", "-") + "/"
					res, err := bench.Run(ctx, sc, s, c)
					if err != nil {
						return fmt.Errorf("%s %s: %w", g.name, s.Name, err)
					}
					rounds[i] = append(rounds[i], res)
				}
			}
			for _, rs := range rounds {
				res := median(rs)
				res.Group = g.name
				report.Results = append(report.Results, res)
			}
		}
	}

	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(report)
	}
	return bench.WriteText(stdout, report, bench.TableOptions{
		Subjects: true,
		Ours:     func(name string) bool { return strings.HasPrefix(name, "dlock") },
	})
}

// fileGroup is dlock's filelock and gofrs/flock, each in a scratch
// directory of its own under o.dir.
func fileGroup(ctx context.Context, o options, floorTime time.Duration, report *bench.Report) (group, func(), error) {
	dlockDir, err := tempDir(o.dir, "filelock")
	if err != nil {
		return group{}, nil, err
	}
	flockDir, err := tempDir(o.dir, "flock")
	if err != nil {
		os.RemoveAll(dlockDir)
		return group{}, nil, err
	}
	be, err := filelock.New(dlockDir)
	if err != nil {
		os.RemoveAll(dlockDir)
		os.RemoveAll(flockDir)
		return group{}, nil, fmt.Errorf("filelock: %w", err)
	}
	cleanup := func() {
		_ = be.Close()
		os.RemoveAll(dlockDir)
		os.RemoveAll(flockDir)
	}
	fl, err := bench.FileFloor(ctx, dlockDir, floorTime)
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	report.Floors = append(report.Floors, fl)
	return group{name: "file", subjects: []bench.Subject{
		bench.Dlock("dlock", be),
		flockSubject(flockDir),
	}}, cleanup, nil
}

// redisGroup is dlock's redislock (default and FIFO), redsync and
// bsm/redislock on the server at addr. Each subject has a go-redis client
// of its own, with default options, so that its round trips are counted
// apart; the server's command counts are read through the same client.
func redisGroup(ctx context.Context, addr string, floorTime time.Duration, report *bench.Report) (group, func(), error) {
	var clients []*redis.Client
	var backends []*redislock.Backend
	cleanup := func() {
		for _, b := range backends {
			_ = b.Close()
		}
		for _, c := range clients {
			_ = c.Close()
		}
	}
	client := func() *redis.Client {
		// ContextTimeoutEnabled, as go-redis recommends for callers that
		// pass deadlines, for every subject alike.
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		clients = append(clients, c)
		return c
	}
	counted := func(s bench.Subject, rdb redis.UniversalClient) bench.Subject {
		s.Counters = append(s.Counters, bench.RedisCommands(rdb), bench.RedisCPU(rdb), bench.RoundTrips(rdb))
		return s
	}
	dlockSubject := func(name string, opts ...redislock.Option) (bench.Subject, error) {
		rdb := client()
		be, err := redislock.New(rdb, opts...)
		if err != nil {
			return bench.Subject{}, fmt.Errorf("redislock: %w", err)
		}
		backends = append(backends, be)
		return counted(bench.Dlock(name, be), rdb), nil
	}

	floorClient := client()
	fl, err := bench.RedisFloor(ctx, floorClient, "dlock-bench/floor", floorTime)
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	fl.Detail += " on " + addr
	report.Floors = append(report.Floors, fl)

	plain, err := dlockSubject("dlock")
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	fifo, err := dlockSubject("dlock-fifo", redislock.WithFIFO(true))
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	rs := client()
	bs := client()
	return group{name: "redis", subjects: []bench.Subject{
		plain,
		fifo,
		counted(redsyncSubject(rs), rs),
		counted(bsmSubject(bs), bs),
	}}, cleanup, nil
}

// redlockGroup is dlock's redlock (with and without FIFO) and redsync, each over the masters at
// addrs with go-redis clients of its own. The servers' counters are not
// read: they would add up three servers' work in columns made for one.
func redlockGroup(addrs []string) (group, func(), error) {
	var clients []*redis.Client
	masters := func() []redis.UniversalClient {
		var ms []redis.UniversalClient
		for _, addr := range addrs {
			c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
			clients = append(clients, c)
			ms = append(ms, c)
		}
		return ms
	}
	var backends []*redlock.Backend
	cleanup := func() {
		for _, be := range backends {
			_ = be.Close()
		}
		for _, c := range clients {
			_ = c.Close()
		}
	}
	for _, fifo := range []bool{false, true} {
		be, err := redlock.New(masters(), redlock.WithFIFO(fifo))
		if err != nil {
			cleanup()
			return group{}, nil, fmt.Errorf("redlock: %w", err)
		}
		backends = append(backends, be)
	}
	return group{name: "redlock", subjects: []bench.Subject{
		bench.Dlock("dlock", backends[0]),
		bench.Dlock("dlock-fifo", backends[1]),
		redsyncSubject(masters()...),
	}}, cleanup, nil
}
