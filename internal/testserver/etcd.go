package testserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// Etcd is a one-member etcd cluster started by [StartEtcd].
type Etcd struct {
	*Process
	// DataDir is the member's data directory. [Etcd.Restart] starts the
	// member again on the same one, so that its keys, leases and revision
	// survive, as on a real restart.
	DataDir string

	// CAFile is, for a member started by [StartEtcdTLS], the PEM of its
	// self-signed certificate, for clients to trust.
	CAFile string

	binary string
	peer   int
	tls    *tlsFiles
	http   *http.Client

	// For members of a cluster: the member's name, the --initial-cluster
	// list and token, and slower timing (see StartEtcdCluster). Empty for
	// a one-member cluster.
	name, cluster, token string
}

type tlsFiles struct{ cert, key string }

// StartEtcd starts a one-member etcd for t on free loopback ports, or skips
// t if etcd is not installed (fails it when CI=true), and waits until the
// member reports itself healthy (it has elected itself leader). The member
// is killed when t ends.
//
// Its heartbeat is 10ms and its election timeout 100ms, so that it elects
// itself at once and its minimum lease TTL is 1s (etcd raises shorter
// lease TTLs to 1.5 election timeouts, rounded up to whole seconds). The
// data directory is on /dev/shm where there is one: etcd syncs every write
// to disk, and a shared VM's disk would make each write cost milliseconds.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return startEtcd(t, nil)
}

// StartEtcdTLS is [StartEtcd] with a member that serves clients only over
// TLS, with a self-signed certificate for 127.0.0.1 (no client
// certificates required).
func StartEtcdTLS(t testing.TB) *Etcd {
	t.Helper()
	cert, key := selfSigned(t, t.TempDir())
	return startEtcd(t, &tlsFiles{cert: cert, key: key})
}

func startEtcd(t testing.TB, files *tlsFiles) *Etcd {
	t.Helper()
	binary := Binary(t, "etcd")
	dir, err := os.MkdirTemp(shmOrTemp(), "dlock-etcd-")
	if err != nil {
		t.Fatalf("testserver: etcd data directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &Etcd{DataDir: dir, binary: binary, tls: files, http: http.DefaultClient}
	if files != nil {
		pemBytes, err := os.ReadFile(files.cert)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		e.CAFile = files.cert
		e.http = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	e.Process = Start(t, binary, func(port int) []string {
		e.peer = FreePort(t)
		return e.args(port)
	})
	e.waitHealthy(t)
	return e
}

// Restart kills the member and starts it again on the same ports and data
// directory, and waits until it is healthy: its data survive, its clients'
// connections do not.
func (e *Etcd) Restart(t testing.TB) {
	t.Helper()
	e.Process = Restart(t, e.Process, e.binary, e.args)
	e.waitHealthy(t)
}

// Endpoint is the member's client URL.
func (e *Etcd) Endpoint() string {
	if e.tls != nil {
		return "https://" + e.Addr
	}
	return "http://" + e.Addr
}

func (e *Etcd) args(port int) []string {
	scheme := "http"
	if e.tls != nil {
		scheme = "https"
	}
	client := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	peers := fmt.Sprintf("http://127.0.0.1:%d", e.peer)
	name, cluster, heartbeat, election := "dlocktest", "dlocktest="+peers, "10", "100"
	if e.cluster != "" {
		name, cluster, heartbeat, election = e.name, e.cluster, "50", "500"
	}
	args := []string{
		"--name", name,
		"--data-dir", e.DataDir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peers,
		"--initial-advertise-peer-urls", peers,
		"--initial-cluster", cluster,
		"--heartbeat-interval", heartbeat,
		"--election-timeout", election,
		"--log-level", "error",
		"--logger", "zap",
	}
	if e.token != "" {
		args = append(args, "--initial-cluster-token", e.token)
	}
	if e.tls != nil {
		args = append(args, "--cert-file", e.tls.cert, "--key-file", e.tls.key)
	}
	return args
}

// waitHealthy polls /health until the member answers that it is healthy:
// accepting connections comes before electing a leader.
func (e *Etcd) waitHealthy(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.Endpoint()+"/health", nil)
		resp, err := e.http.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = string(body)
			if resp.StatusCode == http.StatusOK && strings.Contains(last, `"health":"true"`) {
				return
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testserver: etcd on %s not healthy: %s; output:\n%s", e.Addr, last, e.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// EtcdCluster is a cluster of etcd members started by [StartEtcdCluster].
type EtcdCluster struct {
	Members []*Etcd
}

// StartEtcdCluster starts an n-member etcd cluster for t on free loopback
// ports, or skips t if etcd is not installed (fails it when CI=true), and
// waits until every member reports itself healthy. The members are killed
// when t ends. Their heartbeat is 50ms and election timeout 500ms: on a
// loaded two-core machine a tighter timing makes members call elections
// when nothing failed. The minimum lease TTL is then 1s, as for
// [StartEtcd].
func StartEtcdCluster(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	binary := Binary(t, "etcd")
	token := fmt.Sprintf("dlocktest-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := &EtcdCluster{}
	var peers []string
	for i := range n {
		dir, err := os.MkdirTemp(shmOrTemp(), "dlock-etcd-")
		if err != nil {
			t.Fatalf("testserver: etcd data directory: %v", err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		m := &Etcd{DataDir: dir, binary: binary, http: http.DefaultClient, name: fmt.Sprintf("m%d", i), peer: FreePort(t), token: token}
		peers = append(peers, fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.peer))
		c.Members = append(c.Members, m)
	}
	// A member serves clients only once the cluster has formed, so all are
	// launched before any is waited for.
	for _, m := range c.Members {
		m.cluster = strings.Join(peers, ",")
		p, err := launch(binary, m.args, FreePort(t))
		if err != nil {
			t.Fatalf("testserver: start etcd member %s: %v", m.name, err)
		}
		t.Cleanup(p.Stop)
		m.Process = p
	}
	for _, m := range c.Members {
		m.waitHealthy(t)
	}
	return c
}

// Endpoints are the members' client URLs.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.Endpoint())
	}
	return eps
}

// Leader returns the member that says it is the leader (from its
// /metrics), waiting up to 15s for one to say so.
func (c *EtcdCluster) Leader(t testing.TB) *Etcd {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if m.isLeader() {
				return m
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("testserver: no etcd member says it is the leader")
	return nil
}

func (e *Etcd) isLeader() bool {
	select {
	case <-e.done:
		return false // stopped
	default:
	}
	resp, err := e.http.Get(e.Endpoint() + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return err == nil && strings.Contains(string(body), "\netcd_server_is_leader 1\n")
}

func shmOrTemp() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
