package reliability

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// rssGrowthBound is how much the agent's resident memory may grow while
// thousands of processes come and go: per-process state must be released,
// so growth is only the caches (bounded by --symbol-cache-size) warming.
// The symbol cache is bounded to 32 MiB here (--symbol-cache-size); the
// rest is the Go heap's headroom.
const rssGrowthBound = 96 << 20

// TestChurn runs the agent while thousands of short-lived processes come
// and go: the agent stays up, its memory stays within rssGrowthBound of
// where it was before the churn, what it kept per process is released
// once the processes are gone, and the short-lived processes' samples are
// named.
func TestChurn(t *testing.T) {
	requireRoot(t)
	burner := workload(t, "cpuburn-c")
	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	a := startAgent(t, "--interval", "5s", "--frequency", "99", "--data-dir", t.TempDir(), "--pyroscope-url", srv.URL,
		"--symbol-cache-size", "32MiB")

	time.Sleep(6 * time.Second) // warm up: kallsyms, the host's long-lived processes
	base := a.rss()
	m0 := a.metrics()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started, wait := churn(ctx, t, burner, 1)
	var peak int64
	for ctx.Err() == nil {
		if r := a.rss(); r > peak {
			peak = r
		}
		if !a.alive() {
			t.Fatalf("agent died during churn:\n%s", a.logs)
		}
		time.Sleep(time.Second)
	}
	wait()
	t.Logf("churn: %d processes in 30s; RSS %d MiB before, peak %d MiB", started.Load(), base>>20, peak>>20)
	if started.Load() < 1000 {
		t.Errorf("only %d processes started; the test wants thousands", started.Load())
	}
	if peak-base > rssGrowthBound {
		t.Errorf("RSS grew by %d MiB during churn, bound %d MiB", (peak-base)>>20, rssGrowthBound>>20)
	}

	// Per-process state follows the processes: within two sweeps (20s)
	// the agent holds no more processes than are alive, give or take the
	// ones other tests on the host started and ended within the last 20s
	// (at most 5% of our churn's).
	var m map[string]float64
	var live int
	released := waitFor(30*time.Second, func() bool {
		m = a.metrics()
		live = liveProcesses()
		bound := float64(live) + 0.05*float64(started.Load())
		return m["scorch_symbolizer_processes"] <= bound &&
			m["scorch_tracked_processes"] <= bound &&
			m["scorch_targets_cached_processes"] <= bound
	})
	t.Logf("after churn: %d live processes; symbolizer holds %.0f (before churn %.0f), tracked %.0f, targets cached %.0f, swept %.0f, lost %v",
		live, m["scorch_symbolizer_processes"], m0["scorch_symbolizer_processes"], m["scorch_tracked_processes"],
		m["scorch_targets_cached_processes"], m["scorch_swept_processes_total"], sum(m, "scorch_lost_total"))
	if !released {
		t.Errorf("state of exited processes not released: symbolizer %.0f, tracked %.0f, targets %.0f processes; %d alive",
			m["scorch_symbolizer_processes"], m["scorch_tracked_processes"], m["scorch_targets_cached_processes"], live)
	}

	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	ws := rcv.windows(nil)
	hit, all := frameShare(ws, commIs("cpuburn-c"), "hot_a", "hot_b")
	var named, allW int64
	for _, w := range rcv.windows(func(l map[string]string) bool { return true }) {
		for _, s := range w.prof.Sample {
			if commIs("cpuburn-c")(s) {
				allW += s.Value[0]
				if w.labels["service_name"] == "cpuburn-c" {
					named += s.Value[0]
				}
			}
		}
	}
	t.Logf("cpuburn-c samples: %d, %d naming hot_a or hot_b (%.1f%%); %d under service_name cpuburn-c", all, hit, 100*float64(hit)/float64(max(all, 1)), named)
	if all < 500 {
		t.Fatalf("only %d samples of the short-lived burners arrived", all)
	}
	if float64(hit) < 0.9*float64(all) {
		t.Errorf("%.1f%% of the short-lived burners' samples name hot_a or hot_b, want >= 90%%", 100*float64(hit)/float64(all))
	}
	if float64(named) < 0.9*float64(allW) {
		t.Errorf("%d of %d short-lived burner samples are under service_name cpuburn-c, want >= 90%%", named, allW)
	}
}

func liveProcesses() int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if strings.Trim(e.Name(), "0123456789") == "" {
			n++
		}
	}
	return n
}
