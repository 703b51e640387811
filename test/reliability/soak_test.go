package reliability

import (
	"context"
	"os"
	"slices"
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
//
// "Flat" is judged on medians, not single points: the Go collector lets
// the heap grow to twice the live data between collections, so one scrape
// can read tens of MiB above the next. A leak shows as the second half of
// the run sitting above the first (more than 16 MiB); a transient shows as
// a peak, allowed 64 MiB over the first half's median (one GC cycle's
// headroom at the ~66 MB live heap this churn keeps).
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
		heap       float64
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
			m := a.metrics()
			pts = append(pts, point{time.Since(t0), a.rss(), m["go_memstats_heap_alloc_bytes"], m["go_goroutines"]})
		}
	}
	wait()
	m := a.metrics()
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	after := pts[len(pts)/3:]
	warm := after[0]
	first, second := after[:len(after)/2], after[len(after)/2:]
	median := func(ps []point, f func(point) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rss := func(p point) float64 { return float64(p.rss) }
	heap := func(p point) float64 { return p.heap }
	var maxRSS int64
	var maxG float64
	for _, p := range after {
		maxRSS = max(maxRSS, p.rss)
		maxG = max(maxG, p.goroutines)
	}
	last := pts[len(pts)-1]
	rss1, rss2 := median(first, rss), median(second, rss)
	t.Logf("soak %s: %d processes of churn; after warm-up (%s) RSS median %.0f MiB in the first half, %.0f MiB in the second, max %d MiB, end %d MiB; Go heap allocated, median %.0f -> %.0f MiB; goroutines %.0f -> max %.0f, end %.0f",
		d, started.Load(), warm.at.Round(time.Second), rss1/(1<<20), rss2/(1<<20), maxRSS>>20, last.rss>>20,
		median(first, heap)/(1<<20), median(second, heap)/(1<<20), warm.goroutines, maxG, last.goroutines)
	if rss2-rss1 > 16<<20 {
		t.Errorf("RSS grew: median %.0f MiB in the second half after warm-up, %.0f MiB in the first", rss2/(1<<20), rss1/(1<<20))
	}
	if float64(maxRSS)-rss1 > 64<<20 {
		t.Errorf("RSS peaked at %d MiB, %.0f MiB over the median after warm-up", maxRSS>>20, (float64(maxRSS)-rss1)/(1<<20))
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
