package redislock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/redislock"
)

// The cross-process test re-executes this test binary as contending
// children (internal/proctest), each with its own go-redis client and
// Backend; TestMain runs the role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	if role != proctest.ContendRole {
		return fmt.Errorf("unknown role %q", role)
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("ADDR")})
	defer rdb.Close()
	b, err := redislock.New(rdb, redislock.WithFIFO(os.Getenv("FIFO") == "1"))
	if err != nil {
		return err
	}
	defer b.Close()
	return proctest.Contend(context.Background(), dlock.New(b, dlock.WithTTL(time.Minute)), stdin)
}

// TestProcessesContending runs 8 processes that take one key 20 times each
// through a real redis-server and write through a fenced resource: no two
// are ever inside together, no write is refused, and the fences in the log
// grow with every grant.
func TestProcessesContending(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	srv := startRedis(t)
	for _, fifo := range []string{"0", "1"} {
		t.Run("fifo="+fifo, func(t *testing.T) {
			proctest.RunContention(t, 8, 20, "ADDR="+srv.Addr, "KEY="+uniqueKey(t, "shared"), "FIFO="+fifo)
		})
	}
}
