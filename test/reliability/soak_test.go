package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// soakDuration is SCORCH_SOAK (e.g. 24h by hand), 10m by default: the
// form `make test`, and so CI, runs.
func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SCORCH_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SCORCH_SOAK=%q: %v", s, err)
		}
		return d
	}
	return 10 * time.Minute
}

// soakRetention is the store's --retention in the soak: shorter than the
// warm-up, so that what is judged is the steady state in which each new
// window replaces one that retention deletes.
const soakRetention = 30 * time.Second

// soakWarmup is the part of a soak of d that is not judged: a third, and
// at least long enough for the agent's own time constants to have passed
// (the store's retention, and the symbolizer's minute before it closes
// the files of processes gone), so that caches and indexes have reached
// the size they keep.
func soakWarmup(d time.Duration) time.Duration {
	return max(d/3, soakRetention+time.Minute)
}

// TestSoak runs the agent at 99 Hz with process churn for SCORCH_SOAK:
// after the warm-up, the agent's own memory and its goroutine count stay
// flat, every window closed is exported to the receiver, and the viewer
// answers its default view, the last minute and its filter lists, with
// samples and filled lists, both when the warm-up ends and at the end
// (their times are logged: speed is the bench's to judge).
//
// Memory is the agent's anonymous resident memory (RssAnon: its heap,
// stacks and runtime), not VmRSS: VmRSS also counts the pages of the
// binaries it maps to name frames (RssFile), and the agent names every
// process on the host, so on a shared machine VmRSS moves by tens of MiB
// with what other people run (a 110 MB libLLVM mapped for one window);
// those pages are the page cache's, bounded by the symbol cache and
// dropped under pressure. Both are logged.
//
// "Flat" is judged on medians, not single points: the Go collector lets
// the heap grow by half the live data (GOGC=50) between collections, so
// one scrape can read tens of MiB above the next. A leak shows as the
// second half of the judged part sitting above the first (more than 16
// MiB). A transient shows as a peak of the heap the runtime sizes for
// (its next collection's goal: live data and headroom), allowed 64 MiB
// over the first half's median: not of RSS, which after a transient stays
// up for minutes while the runtime returns the freed pages to the system
// bit by bit (one busy run: heap allocated 82 -> 39 MiB within 4 s, anonymous
// RSS 105 -> 123 -> 117 MiB, after another user's large binary was named).
func TestSoak(t *testing.T) {
	requireRoot(t)
	d := soakDuration(t)
	warmup := soakWarmup(d)
	if warmup >= d*3/4 {
		t.Fatalf("SCORCH_SOAK=%s leaves too little after the %s warm-up to judge", d, warmup)
	}
	burner := workload(t, "cpuburn-c")
	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	a := startAgent(t, "--interval", "5s", "--frequency", "99", "--data-dir", t.TempDir(), "--pyroscope-url", srv.URL,
		"--retention", soakRetention.String(), "--symbol-cache-size", "32MiB")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	started, wait := churn(ctx, t, burner, 1)

	type point struct {
		at         time.Duration
		rss, anon  int64
		heap       float64
		nextGC     float64
		goroutines float64
		symCache   float64 // scorch_symbolizer_cache_bytes
		symFiles   float64
		symProcs   float64
		targets    float64
	}
	var pts []point
	viewed := false
	t0 := time.Now()
	tick := time.NewTicker(max(d/90, time.Second))
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
			if !viewed && time.Since(t0) >= warmup {
				viewed = true
				checkViewer(t, a, "after the warm-up")
			}
			m := a.metrics()
			pts = append(pts, point{time.Since(t0), a.rss(), procStatusKB(a.pid, "RssAnon") << 10,
				m["go_memstats_heap_alloc_bytes"], m["go_memstats_next_gc_bytes"], m["go_goroutines"],
				m["scorch_symbolizer_cache_bytes"], m["scorch_symbolizer_files"], m["scorch_symbolizer_processes"], m["scorch_targets_cached_processes"]})
		}
	}
	wait()
	checkViewer(t, a, "at the end")
	m := a.metrics()
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	i := slices.IndexFunc(pts, func(p point) bool { return p.at >= warmup })
	if i < 0 || len(pts)-i < 10 {
		t.Fatalf("%d scrapes after the %s warm-up: too few to judge", len(pts)-max(i, len(pts)), warmup)
	}
	after := pts[i:]
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
	anon := func(p point) float64 { return float64(p.anon) }
	rss := func(p point) float64 { return float64(p.rss) }
	heap := func(p point) float64 { return p.heap }
	var maxAnon, maxRSS int64
	var maxG, maxGoal float64
	for _, p := range after {
		maxAnon = max(maxAnon, p.anon)
		maxRSS = max(maxRSS, p.rss)
		maxG = max(maxG, p.goroutines)
		maxGoal = max(maxGoal, p.nextGC)
	}
	goal1 := median(first, func(p point) float64 { return p.nextGC })
	last := pts[len(pts)-1]
	anon1, anon2 := median(first, anon), median(second, anon)
	t.Logf("soak %s: %d processes of churn; after warm-up (%s): anonymous RSS median %.0f MiB in the first half, %.0f MiB in the second, max %d MiB, end %d MiB; VmRSS median %.0f -> %.0f MiB, max %d MiB; Go heap allocated, median %.0f -> %.0f MiB; heap goal median %.0f MiB, max %.0f MiB; goroutines %.0f -> max %.0f, end %.0f",
		d, started.Load(), warm.at.Round(time.Second), anon1/(1<<20), anon2/(1<<20), maxAnon>>20, last.anon>>20,
		median(first, rss)/(1<<20), median(second, rss)/(1<<20), maxRSS>>20,
		median(first, heap)/(1<<20), median(second, heap)/(1<<20), goal1/(1<<20), maxGoal/(1<<20), warm.goroutines, maxG, last.goroutines)
	if anon2-anon1 > 16<<20 {
		t.Errorf("memory grew: anonymous RSS median %.0f MiB in the second half after warm-up, %.0f MiB in the first", anon2/(1<<20), anon1/(1<<20))
	}
	if maxGoal-goal1 > 64<<20 {
		t.Errorf("the heap goal peaked at %.0f MiB, %.0f MiB over its median after warm-up", maxGoal/(1<<20), (maxGoal-goal1)/(1<<20))
	}
	if maxG > warm.goroutines+5 {
		t.Errorf("goroutines grew from %.0f to %.0f after warm-up", warm.goroutines, maxG)
	}
	if t.Failed() {
		for _, p := range pts {
			t.Logf("%6s anonymous RSS %4d MiB, VmRSS %4d MiB, heap allocated %4.0f MiB, next GC at %4.0f MiB, %3.0f goroutines; symbolizer %4.1f MiB cached, %3.0f files, %3.0f processes; %4.0f processes with targets",
				p.at.Round(time.Second), p.anon>>20, p.rss>>20, p.heap/(1<<20), p.nextGC/(1<<20), p.goroutines, p.symCache/(1<<20), p.symFiles, p.symProcs, p.targets)
		}
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

// checkViewer asks the agent's viewer what a user opening it would see:
// the default view (all stored time), the last minute, the top table and
// the filter lists. Each must answer 200 with samples (lists: services and
// processes listed); how long each took is logged.
func checkViewer(t *testing.T, a *agentProc, when string) {
	t.Helper()
	now := time.Now()
	last := fmt.Sprintf("from=%d&to=%d", now.Add(-time.Minute).UnixMilli(), now.UnixMilli())
	var times []string
	get := func(path string, v any) {
		t0 := time.Now()
		resp, err := http.Get("http://" + a.addr + path)
		if err != nil {
			t.Errorf("viewer %s: %s: %v", when, path, err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		times = append(times, fmt.Sprintf("%s %s (%d KB)", path, time.Since(t0).Round(time.Millisecond), len(body)>>10))
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("viewer %s: %s: %d %v %.200s", when, path, resp.StatusCode, err, body)
			return
		}
		if err := json.Unmarshal(body, v); err != nil {
			t.Errorf("viewer %s: %s: %v", when, path, err)
		}
	}
	type graph struct {
		Total int64 `json:"total"`
		Names []string
	}
	for _, q := range []string{"maxnodes=5000&minwidth=0.0002", last + "&maxnodes=5000&minwidth=0.0002"} {
		var g graph
		get("/api/flamegraph?"+q, &g)
		if g.Total == 0 || len(g.Names) == 0 {
			t.Errorf("viewer %s: flame graph of %s: %d samples, %d names", when, q, g.Total, len(g.Names))
		}
		var top struct{ Rows []json.RawMessage }
		get("/api/top?limit=300&"+q, &top)
		if len(top.Rows) == 0 {
			t.Errorf("viewer %s: top table of %s is empty", when, q)
		}
	}
	var labels map[string]json.RawMessage
	get("/api/labels", &labels)
	for _, k := range []string{"service", "comm", "pid"} {
		var vs []string
		if err := json.Unmarshal(labels[k], &vs); err != nil || len(vs) == 0 {
			t.Errorf("viewer %s: the %s list is empty (%s)", when, k, labels[k])
		}
	}
	t.Logf("viewer %s: %s", when, strings.Join(times, "; "))
}
