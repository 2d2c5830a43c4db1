package testserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a redis-server started by [StartRedis]: no persistence, bound to
// 127.0.0.1, data files in a temporary directory.
type Redis struct {
	*Process
	binary string
	args   func(port int) []string
}

// redisArgs are the flags every test server gets: loopback only, no
// snapshots or AOF unless extra says otherwise, files in dir.
func redisArgs(dir string, extra []string) func(port int) []string {
	return func(port int) []string {
		args := []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no",
		}
		return append(args, extra...)
	}
}

// StartRedis starts a redis-server on a free loopback port with extra
// flags appended (for example "--appendonly", "yes") and stops it when t
// ends. It skips t when redis-server is not installed (fails under CI).
func StartRedis(t testing.TB, extra ...string) *Redis {
	t.Helper()
	bin := Binary(t, "redis-server")
	args := redisArgs(t.TempDir(), extra)
	return &Redis{Process: Start(t, bin, args), binary: bin, args: args}
}

// Restart kills the server (SIGKILL, so nothing is saved on the way down)
// and starts it again on the same port. Without persistence every key is
// lost, as in a real crash. It fails t if the port cannot be reused.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Process.Stop()
	r.StartAgain(t)
}

// StartAgain starts a server that was stopped (Stop) again on its port,
// with no keys. It fails t if the port cannot be reused.
func (r *Redis) StartAgain(t testing.TB) {
	t.Helper()
	var err error
	for try := 0; try < 20; try++ {
		var p *Process
		if p, err = start(r.binary, r.args, r.Port); err == nil {
			r.Process = p
			t.Cleanup(p.Stop)
			return
		}
		time.Sleep(50 * time.Millisecond) // the old socket may linger briefly
	}
	t.Fatalf("testserver: restart redis-server on port %d: %v", r.Port, err)
}

// RedisCluster is a Redis Cluster of masters without replicas on loopback,
// started by [StartRedisCluster].
type RedisCluster struct {
	Nodes []*Process
}

// Addrs returns the nodes' addresses, for redis.ClusterOptions.Addrs.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// StartRedisCluster starts masters cluster-enabled redis-servers, splits
// the 16384 slots evenly among them, joins them with CLUSTER MEET and
// waits until every node reports cluster_state:ok. The servers stop when t
// ends.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	bin := Binary(t, "redis-server")
	dir := t.TempDir()
	c := &RedisCluster{}
	for i := range masters {
		conf := filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i))
		args := redisArgs(dir, []string{
			"--cluster-enabled", "yes", "--cluster-config-file", conf,
			"--cluster-node-timeout", "5000", "--dbfilename", fmt.Sprintf("dump-%d.rdb", i),
		})
		c.Nodes = append(c.Nodes, Start(t, bin, args))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.form(ctx); err != nil {
		t.Fatalf("testserver: form redis cluster: %v", err)
	}
	return c
}

func (c *RedisCluster) form(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr})
		defer clients[i].Close()
	}
	const slots = 16384
	for i, cl := range clients {
		lo, hi := i*slots/len(clients), (i+1)*slots/len(clients)
		args := make([]int, 0, hi-lo)
		for s := lo; s < hi; s++ {
			args = append(args, s)
		}
		if err := cl.ClusterAddSlots(ctx, args...).Err(); err != nil {
			return fmt.Errorf("node %s: CLUSTER ADDSLOTS: %w", c.Nodes[i].Addr, err)
		}
	}
	for _, n := range c.Nodes[1:] {
		if err := clients[0].ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(n.Port)).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", n.Addr, err)
		}
	}
	// Gossip converges on its own; polling CLUSTER INFO is the only way to
	// see it.
	want := fmt.Sprintf("cluster_known_nodes:%d", len(c.Nodes))
	for i, cl := range clients {
		err := poll(ctx, func() error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, want) {
				return nil
			}
			return fmt.Errorf("%v %v", strings.TrimSpace(info), err)
		})
		if err != nil {
			return fmt.Errorf("node %s not ready: %w", c.Nodes[i].Addr, err)
		}
	}
	// A node broadcasts PUBLISH only over the cluster-bus links it has
	// opened to the others, and cluster_state:ok can come before all of
	// them are up: a release published then reaches no waiter on another
	// node (a conformance test run right after forming the cluster on a
	// loaded machine lost its wake-ups that way). Ready means every node
	// has a connected link to every other.
	for i, cl := range clients {
		err := poll(ctx, func() error {
			nodes, err := cl.ClusterNodes(ctx).Result()
			if err != nil {
				return err
			}
			return allLinked(nodes, len(c.Nodes))
		})
		if err != nil {
			return fmt.Errorf("node %s: cluster bus not connected: %w", c.Nodes[i].Addr, err)
		}
	}
	return nil
}

// allLinked checks CLUSTER NODES output: n nodes, none in handshake, each
// with link-state "connected" (the eighth field).
func allLinked(nodes string, n int) error {
	lines := strings.Split(strings.TrimSpace(nodes), "\n")
	if len(lines) != n {
		return fmt.Errorf("%d nodes known, want %d", len(lines), n)
	}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 8 || f[7] != "connected" || strings.Contains(f[2], "handshake") || strings.Contains(f[2], "noaddr") {
			return fmt.Errorf("not linked: %s", line)
		}
	}
	return nil
}

// RedisSentinel is a redis-server master watched by one Sentinel, started
// by [StartRedisSentinel] or, with a replica, by [StartRedisFailover].
type RedisSentinel struct {
	MasterName    string   // the name the Sentinel monitors, for redis.FailoverOptions.MasterName
	SentinelAddrs []string // for redis.FailoverOptions.SentinelAddrs
	MasterAddr    string   // 127.0.0.1:port of the master

	Master   *Redis
	Replica  *Redis // nil without one
	Sentinel *Process
}

// StartRedisSentinel starts a master (as [StartRedis] does) and one
// Sentinel monitoring it as "mymaster" with quorum 1, and waits until the
// Sentinel reports the master's address. Both stop when t ends.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	return startSentinel(t, StartRedis(t), nil)
}

// StartRedisReplicated starts a master (as [StartRedis] does) and a
// replica of it, and waits until the replica's link to the master is up.
func StartRedisReplicated(t testing.TB) (master, replica *Redis) {
	t.Helper()
	// Without the delay a master waits 5s for more replicas before a sync.
	master = StartRedis(t, "--repl-diskless-sync-delay", "0")
	replica = StartRedis(t, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := waitInfo(ctx, replica.Addr, "replication", "master_link_status:up"); err != nil {
		t.Fatalf("testserver: replica %s of %s: %v", replica.Addr, master.Addr, err)
	}
	// After a diskless sync the master counts the replica online only once
	// it has acknowledged something: until then WAIT counts it out.
	if err := waitAcked(ctx, master.Addr); err != nil {
		t.Fatalf("testserver: replica %s of %s: %v", replica.Addr, master.Addr, err)
	}
	return master, replica
}

// waitAcked writes to the master at addr until a replica acknowledges a
// write (WAIT, on the write's own connection).
func waitAcked(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
	defer rdb.Close()
	return poll(ctx, func() error {
		var wait *redis.IntCmd
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "testserver:replicated", "1", 0)
			wait = redis.NewIntCmd(ctx, "wait", 1, 100)
			return p.Process(ctx, wait)
		})
		if err != nil {
			return err
		}
		if wait.Val() < 1 {
			return errors.New("no replica acknowledged a write")
		}
		return nil
	})
}

// StartRedisFailover is [StartRedisSentinel] with a replica of the master
// that the Sentinel knows, so that [RedisSentinel.Failover] can promote
// it.
func StartRedisFailover(t testing.TB) *RedisSentinel {
	t.Helper()
	// The Sentinel learns of replicas from the master's INFO, which it
	// reads when it connects: a replica linked by then is known at once.
	master, replica := StartRedisReplicated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s := startSentinel(t, master, replica)
	// A failover waits for the Sentinel's periodic reads of each server's
	// INFO (every 10s) to see the promotion, and turns the former master
	// into a replica only after four hello periods (8s): 100ms periods
	// here.
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	debug := redis.NewStatusCmd(ctx, "SENTINEL", "DEBUG", "INFO-PERIOD", 100, "PUBLISH-PERIOD", 100)
	if err := sc.Process(ctx, debug); err != nil {
		t.Fatalf("testserver: sentinel on %s: SENTINEL DEBUG: %v", s.Sentinel.Addr, err)
	}
	if err := s.waitReplica(ctx); err != nil {
		t.Fatalf("testserver: sentinel on %s: %v; output:\n%s", s.Sentinel.Addr, err, s.Sentinel.Output())
	}
	return s
}

func startSentinel(t testing.TB, master, replica *Redis) *RedisSentinel {
	t.Helper()
	const name = "mymaster"
	bin := Binary(t, "redis-server")
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	var confErr error
	// A Sentinel reads its port from its config file and rewrites the file
	// as it learns, so the file is written for each port Start tries.
	args := func(port int) []string {
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 1\n", port, dir, name, master.Port)
		confErr = os.WriteFile(conf, []byte(text), 0o600)
		return []string{conf, "--sentinel"}
	}
	sentinel := Start(t, bin, args)
	if confErr != nil {
		t.Fatalf("testserver: write sentinel config: %v", confErr)
	}
	s := &RedisSentinel{
		MasterName:    name,
		SentinelAddrs: []string{sentinel.Addr},
		MasterAddr:    master.Addr,
		Master:        master,
		Replica:       replica,
		Sentinel:      sentinel,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.waitMaster(ctx); err != nil {
		t.Fatalf("testserver: sentinel on %s: %v; output:\n%s", sentinel.Addr, err, sentinel.Output())
	}
	return s
}

// Failover has the Sentinel promote the replica (SENTINEL FAILOVER) and
// waits until the Sentinel names it as the master and the former master
// has become its replica, so that no two masters take writes. Master and
// Replica then swap.
func (s *RedisSentinel) Failover(ctx context.Context) error {
	if s.Replica == nil {
		return errors.New("testserver: failover without a replica")
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	// Refused while the Sentinel still checks the replica (NOGOODSLAVE).
	err := poll(ctx, func() error { return sc.Failover(ctx, s.MasterName).Err() })
	if err != nil {
		return fmt.Errorf("sentinel failover: %w", err)
	}
	s.Master, s.Replica = s.Replica, s.Master
	s.MasterAddr = s.Master.Addr
	if err := s.waitMaster(ctx); err != nil {
		return err
	}
	return waitInfo(ctx, s.Replica.Addr, "replication", "role:slave")
}

// waitReplica polls the Sentinel until it lists the replica as healthy.
func (s *RedisSentinel) waitReplica(ctx context.Context) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	return poll(ctx, func() error {
		replicas, err := sc.Replicas(ctx, s.MasterName).Result()
		if err != nil {
			return err
		}
		for _, r := range replicas {
			if net.JoinHostPort(r["ip"], r["port"]) == s.Replica.Addr && r["flags"] == "slave" {
				return nil
			}
		}
		return fmt.Errorf("replica %s not listed as healthy: %v", s.Replica.Addr, replicas)
	})
}

// waitInfo polls the server at addr until a line of INFO section is line.
func waitInfo(ctx context.Context, addr, section, line string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	return poll(ctx, func() error {
		info, err := rdb.Info(ctx, section).Result()
		if err != nil {
			return err
		}
		if slices.Contains(strings.Split(info, "\r\n"), line) {
			return nil
		}
		return fmt.Errorf("INFO %s has no %q", section, line)
	})
}

// poll calls f until it returns nil, or returns its last error with ctx's
// when ctx ends.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitMaster polls the Sentinel until it names the master: accepting
// connections does not mean it has loaded its monitor yet.
func (s *RedisSentinel) waitMaster(ctx context.Context) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr})
	defer sc.Close()
	return poll(ctx, func() error {
		reply, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		if err == nil && len(reply) == 2 && net.JoinHostPort(reply[0], reply[1]) == s.MasterAddr {
			return nil
		}
		return fmt.Errorf("master %q not reported as %s: %v %v", s.MasterName, s.MasterAddr, reply, err)
	})
}
