package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server this program started for its run.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	dir  string
}

// startRedis starts redis-server on a free loopback port with no
// persistence (the figures are about the lock protocol, not the disk),
// data in a temporary directory, and waits until it answers PING.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("peers: redis-server not installed (apt-get install redis-server, or pass --redis ADDR): %w", err)
	}
	var lastErr error
	for try := 0; try < 5; try++ { // the free port may be taken in between
		s, err := tryStartRedis(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func tryStartRedis(ctx context.Context, bin string) (*redisServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("peers: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "dlock-peers-redis-*")
	if err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("peers: start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(exited) }()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr})
	defer rdb.Close()
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if rdb.Ping(readyCtx).Err() == nil {
			return s, nil
		}
		select {
		case <-exited:
			os.RemoveAll(dir)
			return nil, errors.New("peers: redis-server exited at start")
		case <-readyCtx.Done():
			s.stop()
			return nil, fmt.Errorf("peers: redis-server on %s did not answer: %w", s.addr, readyCtx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop kills the server and removes its directory.
func (s *redisServer) stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	os.RemoveAll(s.dir)
}
