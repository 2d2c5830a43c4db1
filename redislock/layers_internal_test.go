package redislock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/bench"
	"github.com/dlock-dev/dlock/internal/testserver"
)

// The least a Redis lock with a token needs, as bsm/redislock does it: a
// script that takes the key if absent, and one that deletes it only for
// its token. BenchmarkLayers measures dlock against these.
var (
	minimalAcquire = redis.NewScript(`return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])`)
	minimalRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
)

// layer is one way to take and give back an uncontended lock.
type layer struct {
	name string
	pair func(ctx context.Context) error
}

// pairLayers returns the layers of an acquire+release pair on rdb, from the
// bare commands to dlock's client: each adds one part of the cost.
func pairLayers(rdb redis.UniversalClient, b *Backend) []layer {
	c := dlock.New(b)
	req := dlock.AcquireRequest{
		Key: "layers/backend", Token: "layers-token-0123456789abcdefghijklmnopq",
		TTL: 8 * time.Second, Owner: dlock.Owner{Host: "host.example", PID: 4242},
	}
	req.LockID = dlock.LockID(req.Token)
	n := b.names("layers/scripts")
	ttl := req.TTL.Milliseconds()
	return []layer{
		{"floor", func(ctx context.Context) error { // two plain commands
			if err := rdb.SetNX(ctx, "layers/floor", req.Token, req.TTL).Err(); err != nil {
				return err
			}
			return rdb.Del(ctx, "layers/floor").Err()
		}},
		{"minimal", func(ctx context.Context) error {
			if err := minimalAcquire.Run(ctx, rdb, []string{"layers/minimal"}, req.Token, ttl).Err(); err != nil {
				return err // redis.Nil if the key was held
			}
			return released(minimalRelease.Run(ctx, rdb, []string{"layers/minimal"}, req.Token).Int())
		}},
		{"scripts", func(ctx context.Context) error { // dlock's, with what the backend sends
			keys := n.acquireKeys(req.LockID, false)
			// A grant is the fence, an integer; a refusal is an array.
			if _, err := acquireScript.Run(ctx, rdb, keys, req.Token, ttl, metaBlob(req, time.Now())).Int(); err != nil {
				return err
			}
			return released(releaseScript.Run(ctx, rdb, n.releaseKeys(req.LockID, false), req.Token, n.channel).Int())
		}},
		{"backend", func(ctx context.Context) error {
			if _, ok, err := b.Acquire(ctx, req); err != nil {
				return err
			} else if !ok {
				return errors.New("backend: not granted")
			}
			return b.Release(ctx, req.Key, req.Token)
		}},
		{"acquire", func(ctx context.Context) error {
			l, err := c.Acquire(ctx, "layers/acquire")
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}},
		{"refresh", func(ctx context.Context) error { // with the watchdog
			l, err := c.Acquire(ctx, "layers/refresh", dlock.WithAutoRefresh(true))
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}},
		{"do", func(ctx context.Context) error {
			return c.Do(ctx, "layers/do", func(context.Context) error { return nil })
		}},
		{"client", func(ctx context.Context) error {
			l, err := c.TryAcquire(ctx, "layers/client")
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}},
	}
}

// released checks a release script's reply: 1 when it deleted the key.
func released(n int, err error) error {
	if err == nil && n != 1 {
		err = errors.New("release: the key was not held")
	}
	return err
}

// TestPairLayers keeps BenchmarkLayers and BenchmarkServerWork honest: on
// a real server every layer takes its key and gives it back, so the same
// layer can take it again at once. A layer whose release left the key held
// would fail its second acquire: SET NX answers nil, the acquire script an
// array, a guarantee layer's script 0, the backend and TryAcquire refuse,
// and a waiting Acquire runs out of its 5s, well short of the lease; a
// release script that deleted nothing answers 0.
func TestPairLayers(t *testing.T) {
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	be, err := New(rdb, WithPrefix("layers:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	for _, l := range append(pairLayers(rdb, be), guaranteeLayers(rdb, be)...) {
		for i := range 2 {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			if err := l.pair(ctx); err != nil {
				t.Errorf("%s, pair %d: %v", l.name, i+1, err)
			}
			cancel()
		}
	}
}

// BenchmarkLayers splits the latency of an uncontended acquire+release
// pair (two round trips) on a local redis-server into layers, each
// reported as µs per pair:
//
//	floor    SET NX PX and DEL as plain commands
//	minimal  the same in two Lua scripts, with a token check on release:
//	         the least a lock library needs (bsm/redislock's design)
//	scripts  dlock's acquire and release scripts, with the arguments the
//	         backend sends (fence, metadata, void mark, wake-up)
//	backend  Backend.Acquire and Release
//	acquire  dlock.Client's Acquire (which would wait) and Lock.Release
//	refresh  the same with WithAutoRefresh(true): the watchdog's cost
//	do       dlock.Client.Do with a function that returns at once
//	client   dlock.Client's TryAcquire and Lock.Release
//
// Each iteration is one pair of every layer; the layers take turns in
// rounds of 20 pairs, so that the machine's drift hits them alike. Pin the
// server and the benchmark to a core each to steady the figures:
//
//	go test -run '^$' -bench Layers -benchtime 10000x ./redislock/
func BenchmarkLayers(b *testing.B) {
	rdb, be := layersBackend(b)
	measureLayers(b, pairLayers(rdb, be), func(l layer, d time.Duration) {
		b.ReportMetric(float64(d.Nanoseconds())/1e3/float64(b.N), l.name+"-µs/pair")
	})
}

// layersBackend starts a redis-server for a benchmark and returns a client
// of it, with the timeouts a caller would set, and a backend over it.
func layersBackend(b *testing.B) (*redis.Client, *Backend) {
	srv := testserver.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ContextTimeoutEnabled: true, ReadTimeout: time.Second, WriteTimeout: time.Second})
	b.Cleanup(func() { _ = rdb.Close() })
	be, err := New(rdb, WithPrefix("layers:"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return rdb, be
}

// measureLayers runs b.N pairs of each layer, in turns, and reports each
// layer's total time.
func measureLayers(b *testing.B, layers []layer, report func(layer, time.Duration)) {
	// A context that can end, as a caller's usually can.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, l := range layers { // load the scripts, warm the connections
		if err := l.pair(ctx); err != nil {
			b.Fatalf("%s: %v", l.name, err)
		}
	}
	const round = 20
	total := make([]time.Duration, len(layers))
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i, l := range layers {
			start := time.Now()
			for range n {
				if err := l.pair(ctx); err != nil {
					b.Fatalf("%s: %v", l.name, err)
				}
			}
			total[i] += time.Since(start)
		}
	}
	b.StopTimer()
	for i, l := range layers {
		report(l, total[i])
	}
}

// answerOne is a go-redis hook that answers every command with 1 without
// sending it: enough for the scripts' grant and release replies.
type answerOne struct{}

func (answerOne) DialHook(next redis.DialHook) redis.DialHook { return next }

func (answerOne) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(_ context.Context, cmd redis.Cmder) error {
		if c, ok := cmd.(*redis.Cmd); ok {
			c.SetVal(int64(1))
		}
		return nil
	}
}

func (answerOne) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// BenchmarkClientCPU is BenchmarkLayers without the network: a hook
// answers every command at once, so each figure is the client's own work
// per pair (building commands, the backend, the core) and differences
// between layers show what each costs the caller's CPU. No server runs;
// the floor layer is left out.
//
//	go test -run '^$' -bench ClientCPU -benchtime 200000x ./redislock/
func BenchmarkClientCPU(b *testing.B) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0", ContextTimeoutEnabled: true, ReadTimeout: time.Second, WriteTimeout: time.Second})
	rdb.AddHook(answerOne{})
	b.Cleanup(func() { _ = rdb.Close() })
	be, err := New(rdb)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	for _, l := range pairLayers(rdb, be)[1:] {
		b.Run(l.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			b.ReportAllocs()
			for b.Loop() {
				if err := l.pair(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServerWork reports what the first three layers of
// BenchmarkLayers (floor, minimal, scripts) cost redis-server itself, per
// pair, from INFO, and what each of dlock's guarantees adds to a minimal
// lock's scripts (guaranteeLayers):
//
//	cmd-µs/pair    time the server spent in the commands the client sent
//	               (a script's includes everything it ran)
//	calls/pair     commands the scripts ran (0 for the floor)
//	cpu-µs/pair    the server's CPU time, with the system calls of its
//	               network I/O (the same for any two round trips) and a
//	               fiftieth of an INFO
//
// Unlike latency, these do not include the client's work or the wait for
// the network; they tell what the scripts themselves cost the server. The
// layers take turns in rounds of 50 pairs, with an INFO between turns.
//
//	go test -run '^$' -bench ServerWork -benchtime 20000x ./redislock/
func BenchmarkServerWork(b *testing.B) {
	rdb, be := layersBackend(b)
	layers := append(pairLayers(rdb, be)[:3], guaranteeLayers(rdb, be)...)
	ctx := context.Background()
	for _, l := range layers {
		if err := l.pair(ctx); err != nil { // load the scripts
			b.Fatalf("%s: %v", l.name, err)
		}
	}
	const round = 50
	total := make([]serverWork, len(layers))
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i, l := range layers {
			before := readServerStats(b, rdb)
			for range n {
				if err := l.pair(ctx); err != nil {
					b.Fatalf("%s: %v", l.name, err)
				}
			}
			total[i].add(readServerStats(b, rdb).since(before, l.name == "floor"))
		}
	}
	b.StopTimer()
	for i, l := range layers {
		per := func(v float64) float64 { return v / float64(b.N) }
		b.ReportMetric(per(total[i].cmdMicros), l.name+"-cmd-µs/pair")
		b.ReportMetric(per(total[i].calls), l.name+"-calls/pair")
		b.ReportMetric(per(total[i].cpuMicros), l.name+"-cpu-µs/pair")
	}
}

// serverStats is what INFO says of the server's work: each command's calls
// and time, and the server's CPU time.
type serverStats struct {
	commands  map[string]bench.CommandStat
	cpuMicros uint64
}

// serverWork is the work of one layer's turn (see BenchmarkServerWork).
type serverWork struct{ cmdMicros, calls, cpuMicros float64 }

func (w *serverWork) add(o serverWork) {
	w.cmdMicros += o.cmdMicros
	w.calls += o.calls
	w.cpuMicros += o.cpuMicros
}

// since returns the work done between before and s: the time in the
// commands a client sent, which are SET and DEL when plain, else the
// scripts, and the calls the scripts made.
func (s serverStats) since(before serverStats, plain bool) serverWork {
	sent := map[string]bool{"evalsha": true, "eval": true}
	if plain {
		sent = map[string]bool{"set": true, "del": true}
	}
	w := serverWork{cpuMicros: float64(s.cpuMicros - before.cpuMicros)}
	for name, st := range s.commands {
		switch {
		case sent[name]:
			w.cmdMicros += float64(st.Micros - before.commands[name].Micros)
		case name != "info" && !plain:
			w.calls += float64(st.Calls - before.commands[name].Calls)
		}
	}
	return w
}

func readServerStats(b *testing.B, rdb *redis.Client) serverStats {
	info, err := rdb.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		b.Fatalf("INFO: %v", err)
	}
	var s serverStats
	if s.commands, err = bench.ParseCommandStats(info); err != nil {
		b.Fatal(err)
	}
	if s.cpuMicros, err = bench.ParseCPU(info); err != nil {
		b.Fatal(err)
	}
	return s
}

// The minimal scripts with dlock's guarantees added one at a time, each
// layer with those before it: a fence (INCR), owner metadata beside the key
// (SET with PX, deleted on release), the void mark's check, and the
// release's wake-up (PUBLISH). The last is dlock's script work without its
// replies' details and FIFO; the scripts layer adds those.
var (
	fencedAcquire = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('INCR', KEYS[2])
`)
	metaAcquire = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
return fence
`)
	voidAcquire = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('DEL', KEYS[1]) return 0 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
return fence
`)
	metaRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`)
	publishRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], '')
return 1
`)
)

// guaranteeLayers returns a layer for each step of the scripts above, on
// keys of their own, with the token, TTL and metadata the scripts layer
// sends.
func guaranteeLayers(rdb redis.UniversalClient, b *Backend) []layer {
	req := dlock.AcquireRequest{Key: "layers/guarantees", Token: "layers-token-0123456789abcdefghijklmnopq",
		TTL: 8 * time.Second, Owner: dlock.Owner{Host: "host.example", PID: 4242}}
	req.LockID = dlock.LockID(req.Token)
	n := b.names(req.Key)
	ttl := req.TTL.Milliseconds()
	granted := func(n int, err error) error {
		if err == nil && n < 1 {
			err = errors.New("acquire: not granted")
		}
		return err
	}
	step := func(name string, acquire, release *redis.Script, keys []string, args ...any) layer {
		return layer{name, func(ctx context.Context) error {
			if err := granted(acquire.Run(ctx, rdb, keys, req.Token, ttl, metaBlob(req, time.Now())).Int()); err != nil {
				return err
			}
			return released(release.Run(ctx, rdb, []string{n.lock, n.meta}, append([]any{req.Token}, args...)...).Int())
		}}
	}
	return []layer{
		step("+fence", fencedAcquire, minimalRelease, []string{n.lock, n.fence}),
		step("+meta", metaAcquire, metaRelease, []string{n.lock, n.fence, n.meta}),
		step("+void", voidAcquire, metaRelease, []string{n.lock, n.fence, n.meta, n.void(req.LockID)}),
		step("+publish", voidAcquire, publishRelease, []string{n.lock, n.fence, n.meta, n.void(req.LockID)}, n.channel),
	}
}
