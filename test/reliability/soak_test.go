package reliability

import (
	"context"
	"os"
	"testing"
	"time"
)

// soakDuration is SCORCH_SOAK (e.g. 1h by hand), 2m by default, 30s with
// -short.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SCORCH_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SCORCH_SOAK=%q: %v", s, err)
		}
		return d
	}
	if testing.Short() {
		return 30 * time.Second
	}
	return 2 * time.Minute
}

// TestSoak runs the agent at 99 Hz with process churn for SCORCH_SOAK:
// after a warm-up (the first third), resident memory and the goroutine
// count stay flat, and every window closed is exported to the receiver.
func TestSoak(t *testing.T) {
	requireRoot(t)
	d := soakDuration(t)
	burner := workload(t, "cpuburn-c")
	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	a := startAgent(t, "--interval", "5s", "--frequency", "99", "--data-dir", t.TempDir(), "--pyroscope-url", srv.URL,
		"--retention", "10m", "--symbol-cache-size", "32MiB")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	started, wait := churn(ctx, t, burner, 1)

	type point struct {
		at         time.Duration
		rss        int64
		goroutines float64
	}
	var pts []point
	t0 := time.Now()
	tick := time.NewTicker(max(d/60, time.Second))
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			if !a.alive() {
				t.Fatalf("agent died after %s:\n%s", time.Since(t0), a.logs)
			}
			pts = append(pts, point{time.Since(t0), a.rss(), a.metrics()["go_goroutines"]})
		}
	}
	wait()
	m := a.metrics()
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	warm := pts[len(pts)/3]
	var maxRSS int64
	var maxG float64
	for _, p := range pts[len(pts)/3:] {
		maxRSS = max(maxRSS, p.rss)
		maxG = max(maxG, p.goroutines)
	}
	last := pts[len(pts)-1]
	t.Logf("soak %s: %d processes of churn; after warm-up (%s) RSS %d MiB -> max %d MiB, end %d MiB; goroutines %.0f -> max %.0f, end %.0f",
		d, started.Load(), warm.at.Round(time.Second), warm.rss>>20, maxRSS>>20, last.rss>>20, warm.goroutines, maxG, last.goroutines)
	if maxRSS-warm.rss > 32<<20 {
		t.Errorf("RSS grew by %d MiB after warm-up", (maxRSS-warm.rss)>>20)
	}
	if maxG > warm.goroutines+5 {
		t.Errorf("goroutines grew from %.0f to %.0f after warm-up", warm.goroutines, maxG)
	}
	// Windows closed before the last scrape must all have arrived by the
	// time the agent exited (it flushes on SIGTERM).
	windows := m["scorch_windows_total"]
	t.Logf("windows closed %.0f (at the last scrape), received %d, dropped %v", windows, rcv.count(), pick(m, "scorch_upload_dropped_windows_total"))
	if float64(rcv.count()) < windows {
		t.Errorf("received %d windows, the agent had closed %.0f", rcv.count(), windows)
	}
	if d := sum(m, "scorch_upload_dropped_windows_total"); d != 0 {
		t.Errorf("%.0f windows dropped", d)
	}
}
