// Package etcdurl opens etcd:// and etcds:// backend URLs for the CLI. It
// is a package of its own, linked only into dlock-etcd, because the etcd
// client's gRPC stack doubles the start-up time of every process that
// links it (see internal/cli/backend_etcd.go).
package etcdurl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/etcdlock"
	"github.com/dlock-dev/dlock/internal/backendurl"
)

// etcdPort is etcd's standard client port, used when a URL names none.
const etcdPort = "2379"

// backend is the CLI's etcd backend: it owns its etcd client and closes
// it with the backend.
type backend struct {
	*etcdlock.Backend
	cli *clientv3.Client
}

func (b backend) Close() error {
	return errors.Join(b.Backend.Close(), b.cli.Close())
}

// Open opens etcd[s]://[user:pass@]host[:port][,host[:port]...]
// [?prefix=P&timeout=D&cacert=F&cert=F&key=F]. Without a user it does not
// wait for the cluster, and an unreachable one shows on the first
// operation as "store unavailable"; with one, the etcd client
// authenticates at once, and that fails as "store unavailable" here.
func Open(ctx context.Context, u *url.URL) (dlock.Backend, error) {
	scheme := strings.ToLower(u.Scheme)
	useTLS := scheme == "etcds"
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return nil, fmt.Errorf("%w: use %s://host:port with no path", backendurl.ErrBad, scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: no endpoint; use %s://host:port", backendurl.ErrBad, scheme)
	}
	// Each operation is bounded by ?timeout=, else by the command's
	// --timeout, else by etcdlock's default. With a user name the client
	// authenticates when it is made, bounded by DialTimeout: the same bound.
	cfg := clientv3.Config{DialTimeout: etcdlock.DefaultTimeout, Logger: zap.NewNop()}
	var opts []etcdlock.Option
	if d, ok := backendurl.Timeout(ctx); ok {
		opts = append(opts, etcdlock.WithTimeout(d))
		cfg.DialTimeout = d
	}
	cfg.Username, cfg.Password = backendurl.User(u)
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", backendurl.ErrBad, err)
	}
	var caFile, certFile, keyFile string
	for name, vals := range q {
		last := vals[len(vals)-1]
		switch name {
		case "prefix":
			opts = append(opts, etcdlock.WithPrefix(last))
		case "timeout":
			d, err := time.ParseDuration(last)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%w: timeout %q is not a positive duration such as 2s", backendurl.ErrBad, last)
			}
			opts = append(opts, etcdlock.WithTimeout(d))
			cfg.DialTimeout = d
		case "cacert", "cert", "key":
			if !useTLS {
				return nil, fmt.Errorf("%w: %s is for etcds:// (TLS)", backendurl.ErrBad, name)
			}
			switch name {
			case "cacert":
				caFile = last
			case "cert":
				certFile = last
			default:
				keyFile = last
			}
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q (accepted: prefix, timeout, cacert, cert, key)", backendurl.ErrBad, name)
		}
	}
	urlScheme := "http://"
	if useTLS {
		if cfg.TLS, err = etcdTLS(caFile, certFile, keyFile); err != nil {
			return nil, err
		}
		urlScheme = "https://"
	}
	for _, h := range strings.Split(u.Host, ",") {
		addr, err := backendurl.HostPort(h, etcdPort)
		if err != nil {
			return nil, err
		}
		cfg.Endpoints = append(cfg.Endpoints, urlScheme+addr)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer from etcd within %v", cfg.DialTimeout)
		}
		return nil, fmt.Errorf("authenticate as %q: %w", cfg.Username, err)
	}
	b, err := etcdlock.New(cli, opts...)
	if err != nil {
		_ = cli.Close()
		if errors.Is(err, dlock.ErrInvalidOption) {
			return nil, fmt.Errorf("%w: %v", backendurl.ErrBad, err)
		}
		return nil, err
	}
	return backend{Backend: b, cli: cli}, nil
}

// etcdTLS builds the TLS configuration of etcds:// from PEM files: the CA
// to trust (the system's roots when none is given) and an optional client
// certificate. Unreadable files are usage errors: they are the user's typo.
func etcdTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%w: cacert: %v", backendurl.ErrBad, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: cacert %s holds no PEM certificate", backendurl.ErrBad, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: cert and key go together", backendurl.ErrBad)
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", backendurl.ErrBad, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
