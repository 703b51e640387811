package reliability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// selfSigned is a certificate no client trusts.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"127.0.0.1"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestExportFaults pushes over TLS to a receiver that, one fault after
// another, answers 503, answers 429 with Retry-After, stalls past the push
// timeout, and presents a certificate the agent does not trust; then it
// recovers. Sampling never stops, each cause is logged once, and every
// window closed during the faults arrives exactly once afterwards.
func TestExportFaults(t *testing.T) {
	requireRoot(t)
	burner := workload(t, "cpuburn-c")
	b := run(t, burner)
	rcv := newReceiver()
	srv := httptest.NewUnstartedServer(rcv.handler())
	srv.StartTLS()
	good := srv.TLS.Certificates[0]
	bad := selfSigned(t)
	var untrusted atomic.Bool
	srv.TLS.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if untrusted.Load() {
			return &bad, nil
		}
		return &good, nil
	}
	srv.TLS.Certificates = nil
	t.Cleanup(func() { close(rcv.stallCh); srv.Close() })
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	a := startAgent(t, "--interval", "1s", "--frequency", "99", "--data-dir", "", "--pyroscope-url", srv.URL,
		"--pyroscope-ca-file", ca, "--pyroscope-timeout", "1s", "--queue-size", "8MiB",
		"--include", fmt.Sprintf("pid:%d", b.Process.Pid), "--service-name", fmt.Sprintf("burner=pid:%d", b.Process.Pid))
	start := time.Now()
	time.Sleep(2 * time.Second)
	// Each fault lasts until the agent has met it (its failure counted),
	// at least 2 s so windows queue up; then the receiver heals and the
	// test waits for a delivered window. The agent's backoff has full
	// jitter and grows to 30 s, so fixed phase lengths would sometimes
	// see no attempt at all during a fault.
	for _, f := range []struct{ fault, cause string }{{"503", "http_503"}, {"429", "http_429"}, {"stall", "timeout"}, {"tls", "tls"}} {
		fault := f.fault
		t0 := time.Now()
		metric := fmt.Sprintf("scorch_upload_failures_total{cause=%q}", f.cause)
		m0 := a.metrics()
		d0, f0 := m0["scorch_drains_total"], m0[metric]
		if fault == "tls" {
			untrusted.Store(true)
			srv.CloseClientConnections() // the next push must handshake
		} else {
			rcv.mode.Store(fault)
		}
		time.Sleep(2 * time.Second)
		met := waitFor(45*time.Second, func() bool { return a.metrics()[metric] > f0 })
		untrusted.Store(false)
		rcv.mode.Store("ok")
		if !met {
			t.Errorf("fault %s: the agent made no attempt that met it in %s", fault, time.Since(t0).Round(time.Second))
		}
		n0 := rcv.count()
		if !waitFor(45*time.Second, func() bool { return rcv.count() > n0 }) {
			t.Errorf("fault %s: nothing delivered in 45 s after the receiver healed", fault)
		}
		mm := a.metrics()
		el := time.Since(t0)
		t.Logf("fault %s for %s: %d requests, %d refused, attempts %.0f, failures %v", fault, el.Round(100*time.Millisecond), rcv.requests.Load(), rcv.refused.Load(), mm["scorch_upload_attempts_total"], pick(mm, "scorch_upload_failures_total"))
		// One drain per --interval (1s), whatever the network does.
		if d, want := mm["scorch_drains_total"]-d0, 0.7*el.Seconds()-1; d < want {
			t.Errorf("fault %s: %.0f drains in %s: sampling waited for the network", fault, d, el.Round(100*time.Millisecond))
		}
	}
	// Recovery: the backlog drains.
	time.Sleep(6 * time.Second)
	m := a.metrics()
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	stopped := time.Now()
	var failLogs []string
	for _, r := range a.logs.find("pyroscope upload failed") {
		c, _ := r["cause"].(string)
		failLogs = append(failLogs, c)
	}
	t.Logf("refused %d requests; failures %v; upload failure logs by cause %v", rcv.refused.Load(), pick(m, "scorch_upload_failures_total"), failLogs)
	seen := map[string]bool{}
	for _, c := range failLogs {
		if seen[c] {
			t.Errorf("upload failure of cause %q logged more than once: %v", c, failLogs)
		}
		seen[c] = true
	}
	if len(failLogs) < 4 {
		t.Errorf("want a log line for each distinct fault cause, got %v", failLogs)
	}

	ws := rcv.windows(func(l map[string]string) bool { return l["service_name"] == "burner" })
	for i := 1; i < len(ws); i++ {
		p, c := ws[i-1].prof, ws[i].prof
		if p.TimeNanos == c.TimeNanos {
			t.Errorf("window at %d arrived twice: as %v (%d samples) and as %v (%d samples); %d requests abandoned by the client",
				c.TimeNanos, ws[i-1].labels, len(p.Sample), ws[i].labels, len(c.Sample), rcv.abandoned.Load())
		} else if p.TimeNanos+p.DurationNanos != c.TimeNanos {
			t.Errorf("windows missing between %s and %s", time.Unix(0, p.TimeNanos), time.Unix(0, c.TimeNanos))
		}
	}
	t.Logf("pid %d: %d windows arrived, dropped %v", b.Process.Pid, len(ws), pick(m, "scorch_upload_dropped_windows_total"))
	// Windows are cut every second from the agent's start to its stop;
	// allow for start-up and the last window.
	if want := int(stopped.Sub(start).Seconds()) - 3; len(ws) < want {
		t.Errorf("%d windows arrived, want every one of the ~%d closed", len(ws), want+3)
	}
}

func pick(m map[string]float64, prefix string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

func mount(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(testenv.RequireTool(t, "mount"), args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v\n%s", args, err, out)
	}
}

// TestDataDirFaults fills the local store's file system (a 1 MiB tmpfs)
// and then makes it read-only: the agent logs once per cause, keeps
// sampling and pushing, and stores windows again when the fault ends. The
// file system has room for the windows of the whole test once the filler
// is gone (each takes two 4 KiB pages): on a 64 KiB one, a slow machine's
// windows filled it again before the read-only phase ended, and the
// disk-full errors that rightly followed read as a store that did not
// recover.
func TestDataDirFaults(t *testing.T) {
	requireRoot(t)
	b := run(t, workload(t, "cpuburn-c"))
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir, 0o750)
	mount(t, "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	a := startAgent(t, "--interval", "1s", "--frequency", "99", "--data-dir", dir, "--pyroscope-url", srv.URL,
		"--include", fmt.Sprintf("pid:%d", b.Process.Pid))

	stored := func() int {
		st, err := store.Open(dir, store.Options{})
		if err != nil {
			return -1
		}
		defer st.Close()
		ws, _ := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
		return len(ws)
	}
	_ = stored
	time.Sleep(2 * time.Second)

	// Full: a file takes the space left.
	filler := filepath.Join(dir, "filler")
	exec.Command("dd", "if=/dev/zero", "of="+filler, "bs=4k", "count=512").Run() // 2 MiB: takes all the space left
	e0 := a.metrics()["scorch_store_errors_total"]
	p0 := rcv.count()
	time.Sleep(4 * time.Second)
	m := a.metrics()
	if m["scorch_store_errors_total"]-e0 < 2 {
		t.Errorf("disk full: %.0f store errors in 4 windows", m["scorch_store_errors_total"]-e0)
	}
	if rcv.count()-p0 < 2 {
		t.Errorf("disk full: pushing stopped too (%d windows in 4s)", rcv.count()-p0)
	}
	os.Remove(filler)
	// Retention frees space too; wait for a window to be stored again.
	resumed := waitFor(6*time.Second, func() bool {
		e := a.metrics()["scorch_store_errors_total"]
		time.Sleep(1500 * time.Millisecond)
		return a.metrics()["scorch_store_errors_total"] == e
	})
	if !resumed {
		t.Errorf("store errors continue after the disk has room again")
	}

	// Read-only.
	mount(t, "-o", "remount,ro", dir)
	e1 := a.metrics()["scorch_store_errors_total"]
	time.Sleep(3 * time.Second)
	if a.metrics()["scorch_store_errors_total"]-e1 < 2 {
		t.Errorf("read-only: no store errors counted")
	}
	mount(t, "-o", "remount,rw", dir)
	resumed = waitFor(6*time.Second, func() bool {
		e := a.metrics()["scorch_store_errors_total"]
		time.Sleep(1500 * time.Millisecond)
		return a.metrics()["scorch_store_errors_total"] == e
	})
	if !resumed {
		t.Errorf("store errors continue after the file system is writable again")
	}
	if !a.alive() {
		t.Fatalf("agent died:\n%s", a.logs)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	var causes []string
	for _, r := range a.logs.find("store: write failed") {
		c, _ := r["cause"].(string)
		causes = append(causes, c)
	}
	t.Logf("store failure logs by cause: %v; %d windows pushed", causes, rcv.count())
	seen := map[string]bool{}
	for _, c := range causes {
		if seen[c] {
			t.Errorf("store failure cause %q logged more than once: %v", c, causes)
		}
		seen[c] = true
	}
	if len(causes) < 2 {
		t.Errorf("want one log line each for the full and the read-only file system, got %v", causes)
	}
}
