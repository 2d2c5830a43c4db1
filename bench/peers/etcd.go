package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/bench"
)

// Names of the etcd group's server-wide counters, read from the member's
// /metrics.
const (
	counterEtcdReqs   = "etcd reqs"   // request messages received: unary calls, watch creates and cancels, lease keep-alives
	counterEtcdWrites = "etcd writes" // raft proposals committed: puts, deletes, transactions that write, lease grants and revocations
	counterEtcdCPU    = "etcd cpu µs" // the member's CPU time
)

// etcdGroup is dlock's etcdlock and etcd's own concurrency.Mutex on the
// member at endpoint. Each subject has an etcd client of its own, with a
// hook that counts the unary requests it sends (its round trips), so that
// they are counted apart; the member's own counts, from /metrics, are
// server-wide, as Redis's INFO is.
func etcdGroup(ctx context.Context, endpoint string, floorTime time.Duration, report *bench.Report) (group, func(), error) {
	var (
		clients  []*clientv3.Client
		backends []*etcdlock.Backend
		mutexes  []*etcdMutexSessions
	)
	cleanup := func() {
		for _, b := range backends {
			_ = b.Close() // waits for its background lease revocations
		}
		for _, m := range mutexes {
			m.close()
		}
		for _, c := range clients {
			_ = c.Close()
		}
	}
	client := func() (*clientv3.Client, bench.Counter, error) {
		c, rt, err := newEtcdClient(endpoint)
		if err != nil {
			return nil, bench.Counter{}, err
		}
		clients = append(clients, c)
		return c, rt, nil
	}

	floorClient, _, err := client()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	fl, err := etcdFloor(ctx, floorClient, "dlock-bench/floor", floorTime)
	if err != nil {
		cleanup()
		return group{}, nil, fmt.Errorf("peers: etcd at %s: %w", endpoint, err)
	}
	fl.Detail += " on " + endpoint
	report.Floors = append(report.Floors, fl)

	metrics := &etcdMetrics{url: metricsURL(endpoint)}
	if err := metrics.scrape(ctx); err != nil {
		report.Notes = append(report.Notes, fmt.Sprintf("etcd server counters not reported: %v", err))
		metrics = nil
	}
	counted := func(s bench.Subject, roundTrips bench.Counter) bench.Subject {
		if metrics != nil {
			s.Counters = append(s.Counters, metrics.counters()...)
		}
		s.Counters = append(s.Counters, roundTrips)
		return s
	}

	dcli, drt, err := client()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	be, err := etcdlock.New(dcli)
	if err != nil {
		cleanup()
		return group{}, nil, fmt.Errorf("etcdlock: %w", err)
	}
	backends = append(backends, be)

	mcli, mrt, err := client()
	if err != nil {
		cleanup()
		return group{}, nil, err
	}
	ms := &etcdMutexSessions{cli: mcli, sessions: map[int]*concurrency.Session{}}
	mutexes = append(mutexes, ms)

	return group{name: "etcd", subjects: []bench.Subject{
		counted(bench.Dlock("dlock", be), drt),
		counted(ms.subject(), mrt),
	}}, cleanup, nil
}

// newEtcdClient returns a client of endpoint, with default settings but a
// dial timeout and error-only logging, and a Counter of the unary requests
// it sends: one per attempt, as its retries run outside the hook. Watches
// and lease keep-alives travel on streams and are not counted there.
func newEtcdClient(endpoint string) (*clientv3.Client, bench.Counter, error) {
	n := new(atomic.Uint64)
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		n.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	// Errors only: a contended round ends by cancelling its waiters, and
	// the client warns of every request that cancelling cut short.
	logCfg := zap.NewProductionConfig()
	logCfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(count)},
		LogConfig:   &logCfg,
	})
	if err != nil {
		return nil, bench.Counter{}, fmt.Errorf("peers: etcd client for %s: %w", endpoint, err)
	}
	return cli, bench.Counter{
		Name: bench.CounterRoundTrips,
		Read: func(context.Context) (uint64, error) { return n.Load(), nil },
	}, nil
}

// etcdFloor measures a plain Put key + Delete key, two sequential round
// trips and two raft writes: what a pair costs at the least on this member,
// with no lease and no transaction.
func etcdFloor(ctx context.Context, cli *clientv3.Client, key string, d time.Duration) (bench.Floor, error) {
	// The client waits for a reachable member rather than failing: bound
	// the first request, so that a wrong --etcd fails at once.
	checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := cli.Get(checkCtx, key)
	cancel()
	if err != nil {
		return bench.Floor{}, fmt.Errorf("not reachable: %w", err)
	}
	fl, err := bench.MeasureFloor(ctx, "etcd", "Put "+key+" + Delete "+key+" (two round trips, two raft writes)", d, func() error {
		if _, err := cli.Put(ctx, key, "x"); err != nil {
			return err
		}
		_, err := cli.Delete(ctx, key)
		return err
	})
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("floor: %w", err)
	}
	return fl, err
}

// mutexPrefix starts the etcd keys of the etcd-mutex subject.
const mutexPrefix = "/peers-mutex/"

// etcdMutexSessions is the etcd-mutex subject: etcd's
// client/v3/concurrency Mutex, with a concurrency.Session per worker on
// one client, as separate contenders need. A Mutex's key is its prefix
// and its session's lease, so two Mutexes of one name on one Session are
// the same key: both would "hold" it at once. The Session's lease is the
// bench TTL (10s, default 60s) and is kept alive by the session, so the
// sessions are made once per worker (the first time worker i is asked
// for) and kept for the whole run, as a program keeps its session, and
// closed (their leases revoked) at the end.
type etcdMutexSessions struct {
	cli      *clientv3.Client
	mu       sync.Mutex
	sessions map[int]*concurrency.Session
}

func (m *etcdMutexSessions) subject() bench.Subject {
	return bench.Subject{Name: "etcd-mutex", NewLocker: m.locker}
}

func (m *etcdMutexSessions) locker(worker int) (bench.Locker, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[worker]
	if ok {
		select {
		case <-s.Done(): // its keep-alive failed: the lease may be gone
			ok = false
		default:
		}
	}
	if !ok {
		var err error
		s, err = concurrency.NewSession(m.cli, concurrency.WithTTL(int(bench.DefaultTTL/time.Second)))
		if err != nil {
			return nil, fmt.Errorf("etcd session: %w", err)
		}
		m.sessions[worker] = s
	}
	return etcdMutexLocker{s}, nil
}

func (m *etcdMutexSessions) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		_ = s.Close()
	}
	clear(m.sessions)
}

// etcdMutexLocker makes a new Mutex per attempt, on "/peers-mutex/"+key:
// TryLock (one transaction; a refusal deletes the key it put) for serial
// and parallel, Lock for contended: it queues by its key's create
// revision and watches the deletion of the key just before it, so the
// waiters are served in order and make no request while they wait.
type etcdMutexLocker struct{ s *concurrency.Session }

func (l etcdMutexLocker) TryLock(ctx context.Context, key string) (bench.Held, bool, error) {
	m := concurrency.NewMutex(l.s, mutexPrefix+key)
	err := m.TryLock(ctx)
	switch {
	case err == nil:
		return etcdMutexHeld{m}, true, nil
	case errors.Is(err, concurrency.ErrLocked):
		return nil, false, nil
	}
	return nil, false, err
}

func (l etcdMutexLocker) Lock(ctx context.Context, key string) (bench.Held, error) {
	m := concurrency.NewMutex(l.s, mutexPrefix+key)
	if err := m.Lock(ctx); err != nil {
		return nil, err
	}
	return etcdMutexHeld{m}, nil
}

type etcdMutexHeld struct{ m *concurrency.Mutex }

// Fence is the revision of the response that granted the lock
// (Mutex.Header().Revision), the only revision the Mutex exposes: on a
// grant without waiting it is the revision at which its key was written
// (the key's create revision, dlock's etcd fence); after a wait it is the
// revision of the read that confirmed the grant, later than the previous
// holder's deletion. Either way it grows from one holder to the next, so
// the scenario checks it as it checks dlock's fences.
func (h etcdMutexHeld) Fence() uint64 {
	if hdr := h.m.Header(); hdr != nil && hdr.Revision > 0 {
		return uint64(hdr.Revision)
	}
	return 0
}

func (h etcdMutexHeld) Unlock(ctx context.Context) error { return h.m.Unlock(ctx) }

// metricsURL is the /metrics address of the member at endpoint, which
// serves it on its client URL (plain http only).
func metricsURL(endpoint string) string {
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	return strings.TrimSuffix(endpoint, "/") + "/metrics"
}

// etcdMetrics reads the member's counters from its /metrics. One scrape
// (about 150 kB of text) serves all three counters of a reading: the
// first counter scrapes, the next two read what it got, since a subject's
// counters are read in order. A scrape costs the member several ms of
// CPU (6-7 ms on a 2-core VM), about one scrape's worth of which lands
// between a subject's two readings, in etcd cpu µs, as Redis's INFO reads
// land in redis cpu µs.
type etcdMetrics struct {
	url string

	mu   sync.Mutex
	last map[string]float64
}

func (m *etcdMetrics) counters() []bench.Counter {
	return []bench.Counter{
		{Name: counterEtcdReqs, Read: func(ctx context.Context) (uint64, error) {
			if err := m.scrape(ctx); err != nil {
				return 0, err
			}
			return m.value("grpc_server_msg_received_total", 1)
		}},
		{Name: counterEtcdWrites, Read: func(context.Context) (uint64, error) {
			return m.value("etcd_server_proposals_committed_total", 1)
		}},
		{Name: counterEtcdCPU, Read: func(context.Context) (uint64, error) {
			return m.value("process_cpu_seconds_total", 1e6)
		}},
	}
}

func (m *etcdMetrics) scrape(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return fmt.Errorf("peers: etcd metrics: %w", err)
	}
	// Uncompressed: gzip would cost the member a third more CPU per scrape.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("peers: etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("peers: etcd metrics: GET %s: %s", m.url, resp.Status)
	}
	sums, err := parseMetrics(resp.Body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.last = sums
	m.mu.Unlock()
	return nil
}

// value returns metric name, summed over its labels, from the last scrape,
// times scale.
func (m *etcdMetrics) value(name string, scale float64) (uint64, error) {
	m.mu.Lock()
	v, ok := m.last[name]
	m.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("peers: etcd metrics: no %s in %s", name, m.url)
	}
	return uint64(math.Round(v * scale)), nil
}

// parseMetrics reads Prometheus text exposition and returns each metric's
// samples summed over their labels, by metric name.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	sums := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return nil, fmt.Errorf("peers: etcd metrics: bad line %q", line)
			}
			rest = rest[end+1:]
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			return nil, fmt.Errorf("peers: etcd metrics: bad line %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("peers: etcd metrics: bad value in %q", line)
		}
		sums[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("peers: etcd metrics: %w", err)
	}
	return sums, nil
}
