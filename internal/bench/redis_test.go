package bench

import (
	"maps"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/redislock"
)

func TestParseCommandStats(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       uint64
		wantErr    bool
	}{
		{"empty", "# Commandstats\r\n", 0, false},
		{"sums and skips setup", "# Commandstats\r\n" +
			"cmdstat_set:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n" +
			"cmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
			"cmdstat_info:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n" +
			"cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n" +
			"cmdstat_hello:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n", 13, false},
		{"bad number", "cmdstat_set:calls=x,usec=1\r\n", 0, true},
		{"no calls", "cmdstat_set:usec=1\r\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCommandStats(tc.info)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseCommandStats = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseCommandStatsPerCommand(t *testing.T) {
	got, err := ParseCommandStats("# Commandstats\r\n" +
		"cmdstat_EVALSHA:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50\r\n" +
		"# CPU\r\nused_cpu_sys:1.0\r\n")
	want := map[string]CommandStat{"evalsha": {Calls: 10, Micros: 50}, "client|setinfo": {Calls: 2, Micros: 1}}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("ParseCommandStats = %v, %v; want %v", got, err, want)
	}
	if _, err := ParseCommandStats("cmdstat_get:calls=1,usec=x\r\n"); err == nil {
		t.Fatal("ParseCommandStats accepted usec=x")
	}
}

func TestParseCPU(t *testing.T) {
	for _, tc := range []struct {
		name, info string
		want       uint64
		wantErr    bool
	}{
		{"sums user and sys", "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:0.000042\r\n" +
			"used_cpu_sys_children:9.000000\r\nused_cpu_user_main_thread:7.000000\r\n", 1250042, false},
		{"one missing", "# CPU\r\nused_cpu_sys:1.0\r\n", 0, true},
		{"bad number", "used_cpu_sys:x\r\nused_cpu_user:1\r\n", 0, true},
		{"negative", "used_cpu_sys:-1\r\nused_cpu_user:1\r\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCPU(tc.info)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("ParseCPU = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func newRedis(t *testing.T) *redis.Client {
	t.Helper()
	srv := testserver.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestRedisCommandsCountsServerCommands(t *testing.T) {
	rdb := newRedis(t)
	ctx := t.Context()
	c := RedisCommands(rdb)
	before, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trips := RoundTrips(rdb)
	tripsBefore, _ := trips.Read(ctx)
	rdb.Set(ctx, "k", "v", 0)
	rdb.Eval(ctx, "redis.call('get', KEYS[1]); return redis.call('del', KEYS[1])", []string{"k"})
	after, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tripsAfter, _ := trips.Read(ctx)
	if after-before != 4 {
		t.Fatalf("server counted %d commands for SET and an EVAL of GET and DEL, want 4 (INFO left out)", after-before)
	}
	if tripsAfter-tripsBefore != 2 {
		t.Fatalf("counted %d round trips for SET and EVAL, want 2 (INFO left out)", tripsAfter-tripsBefore)
	}
}

func TestRedisFloorAndSubject(t *testing.T) {
	rdb := newRedis(t)
	fl, err := RedisFloor(t.Context(), rdb, prefix(t)+"floor", 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if fl.Pairs == 0 || fl.PairsPerSecond <= 0 {
		t.Fatalf("floor %+v measured nothing", fl)
	}
	if n := rdb.Exists(t.Context(), prefix(t)+"floor").Val(); n != 0 {
		t.Fatal("floor left its key behind")
	}

	be, err := redislock.New(rdb, redislock.WithFIFO(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	s := Dlock("dlock", be)
	s.Counters = append(s.Counters, RedisCommands(rdb), RedisCPU(rdb), RoundTrips(rdb))
	res, err := Run(t.Context(), Serial, s, Config{Ops: 50, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Each backend call is one script, one round trip, except that the
	// first run of each of the two scripts (acquire, release) takes two:
	// EVALSHA answers NOSCRIPT, then EVAL loads it.
	calls, trips := res.PerOp[CounterStoreOps]*50, res.PerOp[CounterRoundTrips]*50
	if calls != 100 || trips < calls || trips > calls+2 {
		t.Errorf("backend calls %v, round trips %v over 50 pairs: want 100 and 100..102", calls, trips)
	}
	// The server also counts the commands the scripts run.
	if got := res.PerOp[CounterRedisCmds]; got <= res.PerOp[CounterRoundTrips] {
		t.Errorf("redis commands per pair %v, not above round trips %v", got, res.PerOp[CounterRoundTrips])
	}
	// Two round trips cost the server at least a µs of CPU.
	if got := res.PerOp[CounterRedisCPU]; got < 1 {
		t.Errorf("redis CPU per pair %v µs, want at least 1", got)
	}
	res, err = Run(t.Context(), Contended, s, Config{Ops: 100, Workers: 3, Prefix: prefix(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Violations != 0 || res.FenceRegressions != 0 {
		t.Fatalf("violations %d, fence regressions %d", res.Violations, res.FenceRegressions)
	}
}
