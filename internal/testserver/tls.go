package testserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// RedisTLS is a redis-server started by [StartRedisTLS]: it speaks only
// TLS, with a self-signed certificate for 127.0.0.1.
type RedisTLS struct {
	*Process
	CAFile string         // PEM of the certificate, for clients to trust
	Config *tls.Config    // a client configuration that trusts it
	Pool   *x509.CertPool // the same trust, for other configurations
}

// StartRedisTLS starts a redis-server that accepts only TLS connections
// (no plain port, no client certificates required) on a free loopback
// port, and stops it when t ends.
func StartRedisTLS(t testing.TB) *RedisTLS {
	t.Helper()
	bin := Binary(t, "redis-server")
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	args := func(port int) []string {
		return []string{
			"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
			"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", certFile,
			"--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no",
		}
	}
	p := Start(t, bin, args)
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return &RedisTLS{Process: p, CAFile: certFile, Pool: pool, Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 (its own CA)
// and its key into dir.
func selfSigned(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dlock test redis"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
