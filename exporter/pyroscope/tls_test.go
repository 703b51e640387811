package pyroscope

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
)

// newTLSReceiver starts a receiver whose certificate is signed by a fresh
// CA, and returns the CA as a PEM file.
func newTLSReceiver(t *testing.T) (*receiver, *httptest.Server, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "scorch test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}

	r := &receiver{t: t}
	mux := http.NewServeMux()
	mux.Handle(pushv1connect.NewPusherServiceHandler(r))
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted attempt logs a handshake error
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return r, srv, caFile
}

func TestTLSCustomCA(t *testing.T) {
	r, srv, caFile := newTLSReceiver(t)

	// Without the CA the server is not trusted.
	e, err := New(fastConfig(srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Enqueue(window(0))
	stop := run(t, e)
	waitFor(t, "a TLS failure", func() bool { return e.Stats().Failures["tls"] > 0 })
	stop()
	if n := len(r.received()); n != 0 {
		t.Fatalf("untrusted server received %d windows", n)
	}

	// With the CA file it is.
	cfg := fastConfig(srv.URL)
	cfg.CAFile = caFile
	e, err = New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Enqueue(window(1))
	run(t, e)
	waitFor(t, "delivery over TLS", func() bool { return e.Stats().Sent == 1 })
	if got := r.received(); len(got) != 1 || got[0].labels["seq"] != "1" {
		t.Errorf("received %v", got)
	}
	if st := e.Stats(); len(st.Failures) != 0 {
		t.Errorf("failures with the right CA: %v", st.Failures)
	}

	// InsecureSkipVerify accepts it without the CA.
	cfg = fastConfig(srv.URL)
	cfg.InsecureSkipVerify = true
	e, _ = New(cfg, nil)
	e.Enqueue(window(2))
	run(t, e)
	waitFor(t, "delivery without verification", func() bool { return e.Stats().Sent == 1 })

	// A CA file without certificates is a configuration error.
	bad := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(bad, []byte("not a certificate\n"), 0o600)
	if _, err := New(Config{URL: srv.URL, CAFile: bad}, nil); err == nil {
		t.Error("New accepted a CA file without certificates")
	}
}
