package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// etcdServer is a one-member etcd this program started for its run.
type etcdServer struct {
	endpoint string // client URL, http://127.0.0.1:port
	cmd      *exec.Cmd
	dir      string
	exited   chan struct{}
	out      *syncBuffer // the member's output, for errors at start
}

// startEtcd starts etcd on free loopback client and peer ports, with its
// data directory on /dev/shm where there is one (etcd syncs every write to
// disk; on a shared VM's disk each write would cost milliseconds, and the
// figures are about the lock protocol), and waits until the member reports
// itself healthy. The settings are internal/testserver's: heartbeat 10ms,
// election timeout 100ms, so that it elects itself at once.
func startEtcd(ctx context.Context) (*etcdServer, error) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, fmt.Errorf("peers: etcd not installed (apt-get install etcd-server, or pass --etcd ENDPOINT, or --no-etcd): %w", err)
	}
	var lastErr error
	for try := 0; try < 5; try++ { // a free port may be taken in between
		s, err := tryStartEtcd(ctx, bin)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("peers: find a free port: %w", err)
		}
		defer l.Close() // held until all are chosen, so that they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tryStartEtcd(ctx context.Context, bin string) (*etcdServer, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(shmOrTemp(), "dlock-peers-etcd-*")
	if err != nil {
		return nil, fmt.Errorf("peers: %w", err)
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	s := &etcdServer{endpoint: client, dir: dir, exited: make(chan struct{}), out: new(syncBuffer)}
	s.cmd = exec.Command(bin,
		"--name", "dlockpeers",
		"--data-dir", dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "dlockpeers="+peer,
		"--heartbeat-interval", "10",
		"--election-timeout", "100",
		"--log-level", "error",
		"--logger", "zap")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("peers: start etcd: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()

	readyCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var last string
	for {
		healthy, status := etcdHealthy(readyCtx, s.endpoint)
		if healthy {
			return s, nil
		}
		last = status
		select {
		case <-s.exited:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("peers: etcd exited at start: %s", strings.TrimSpace(s.out.String()))
		case <-readyCtx.Done():
			s.stop()
			return nil, fmt.Errorf("peers: etcd on %s not healthy (%s): %w", s.endpoint, last, readyCtx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// etcdHealthy asks the member's /health whether it is healthy (it has a
// leader: accepting connections comes before electing one).
func etcdHealthy(ctx context.Context, endpoint string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/health", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)), string(body)
}

// stop kills the member, waits for it to exit and removes its data
// directory.
func (s *etcdServer) stop() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
		}
	}
	os.RemoveAll(s.dir)
}

// shmOrTemp is /dev/shm where there is one, else the temporary directory.
func shmOrTemp() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// syncBuffer is a bytes.Buffer safe for the writes of a child's output
// and a read from another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 64<<10 { // enough to say why it failed
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
