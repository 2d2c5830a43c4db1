package redlock_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/internal/proctest"
	"github.com/dlock-dev/dlock/redlock"
)

// The cross-process test re-executes this test binary as contending
// children (internal/proctest), each with its own clients and Backend on
// the same three masters; TestMain runs the role in a child.

func TestMain(m *testing.M) { proctest.Main(m, runRole) }

func runRole(role string, stdin *bufio.Scanner) error {
	if role != proctest.ContendRole {
		return fmt.Errorf("unknown role %q", role)
	}
	var clients []redis.UniversalClient
	for addr := range strings.SplitSeq(os.Getenv("ADDRS"), ",") {
		c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		defer c.Close()
		clients = append(clients, c)
	}
	// A generous master timeout: eight children, three servers and the
	// race detector share two cores.
	b, err := redlock.New(clients, redlock.WithPrefix(os.Getenv("PREFIX")), redlock.WithMasterTimeout(10*time.Second),
		redlock.WithFIFO(os.Getenv("FIFO") == "1"))
	if err != nil {
		return err
	}
	defer b.Close()
	return proctest.Contend(context.Background(), dlock.New(b, dlock.WithTTL(time.Minute)), stdin)
}

// TestProcessesContending runs 8 processes that take one key 10 times each
// through three real masters and write through a fenced resource: no two
// are ever inside together, no write is refused, and the fences grow with
// every grant (all masters are up, so every grant has all three and the
// counters move together).
func TestProcessesContending(t *testing.T) { contend(t) }

// TestProcessesContendingFIFO is TestProcessesContending with FIFO on.
func TestProcessesContendingFIFO(t *testing.T) { contend(t, "FIFO=1") }

// contend runs TestProcessesContending with the children's extra
// environment.
func contend(t *testing.T, env ...string) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	servers, _ := masters(t, 3)
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr
	}
	proctest.RunContention(t, 8, 10, append([]string{"ADDRS=" + strings.Join(addrs, ","), "PREFIX=" + uniquePrefix(), "KEY=shared"}, env...)...)
}
