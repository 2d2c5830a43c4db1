package bench

import (
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock/filelock"
	"github.com/dlock-dev/dlock/internal/testserver"
	"github.com/dlock-dev/dlock/memlock"
	"github.com/dlock-dev/dlock/pglock"
	"github.com/dlock-dev/dlock/redislock"
)

// The benchmarks run the scenarios of `dlock bench` with b.N pairs (or
// grants), so that benchstat can compare commits:
//
//	go test -run '^$' -bench . -count 10 ./internal/bench/ > new.txt
//	benchstat old.txt new.txt
//
// Besides ns/op they report ops/s, p50-ns and p99-ns (per pair, or the
// wait in contended), store-ops/op (redis-cmds/op and round-trips/op on
// Redis) and, for contended, fairness and
// violations. The redis and postgres ones start a server on a free port
// and are skipped when it is not installed.

func BenchmarkSerial(b *testing.B)    { benchSubjects(b, Serial) }
func BenchmarkParallel(b *testing.B)  { benchSubjects(b, Parallel) }
func BenchmarkContended(b *testing.B) { benchSubjects(b, Contended) }

func benchSubjects(b *testing.B, sc Scenario) {
	b.Run("mem", func(b *testing.B) { benchScenario(b, sc, Dlock("mem", memlock.New())) })
	b.Run("file", func(b *testing.B) {
		be, err := filelock.New(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = be.Close() })
		benchScenario(b, sc, Dlock("file", be))
	})
	b.Run("redis", func(b *testing.B) { benchScenario(b, sc, redisSubject(b, false)) })
	b.Run("redis-fifo", func(b *testing.B) { benchScenario(b, sc, redisSubject(b, true)) })
	b.Run("postgres", func(b *testing.B) { benchScenario(b, sc, postgresSubject(b)) })
}

// postgresSubject starts a PostgreSQL server for b and returns dlock over
// it.
func postgresSubject(b *testing.B) Subject {
	srv := testserver.StartPostgres(b)
	pool, err := pgxpool.New(b.Context(), srv.DSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	be, err := pglock.New(pool)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return Dlock("postgres", be)
}

// redisSubject starts a server for b and returns dlock over it, counting
// the server's commands too.
func redisSubject(b *testing.B, fifo bool) Subject {
	srv := testserver.StartRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	be, err := redislock.New(rdb, redislock.WithFIFO(fifo))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	s := Dlock("redis", be)
	s.Counters = append(s.Counters, RedisCommands(rdb), RoundTrips(rdb))
	return s
}

func benchScenario(b *testing.B, sc Scenario, s Subject) {
	res, err := Run(b.Context(), sc, s, Config{Ops: b.N, Prefix: "bench/" + b.Name() + "/"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.PerSecond, "ops/s")
	b.ReportMetric(float64(res.Latency.P50), "p50-ns")
	b.ReportMetric(float64(res.Latency.P99), "p99-ns")
	if v, ok := res.PerOp[CounterStoreOps]; ok {
		b.ReportMetric(v, "store-ops/op")
	}
	if v, ok := res.PerOp[CounterRedisCmds]; ok {
		b.ReportMetric(v, "redis-cmds/op")
	}
	if v, ok := res.PerOp[CounterRoundTrips]; ok {
		b.ReportMetric(v, "round-trips/op")
	}
	if sc == Contended {
		b.ReportMetric(res.Fairness, "fairness")
		b.ReportMetric(float64(res.Violations+res.FenceRegressions), "violations")
		if res.Violations+res.FenceRegressions != 0 {
			b.Errorf("%d violations, %d fence regressions", res.Violations, res.FenceRegressions)
		}
	}
}
