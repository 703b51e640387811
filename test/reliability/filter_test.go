package reliability

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// samplesAtLeast is the least number of samples a single-threaded process
// that ran cpu seconds must get at hz, allowing slack seconds of the count
// being read at another time than the CPU time (the agent's counters move
// at drains, once a second) and four standard deviations of counting noise.
func samplesAtLeast(cpu float64, hz int, slack float64) float64 {
	n := cpu * float64(hz)
	return n - 4*math.Sqrt(n) - slack*float64(hz)
}

// TestExcludeInKernel runs `scorch agent --exclude comm:^NAME$` as a user
// would, then starts a busy process named NAME and a busy control process:
// the rules reach the BPF program within a second or two of NAME's first
// sample, so its samples stop reaching user space and are counted as
// filtered in the kernel instead, in step with the CPU time NAME burns; no
// stored window holds NAME, and the control is kept.
func TestExcludeInKernel(t *testing.T) {
	requireRoot(t)
	const hz = 99
	// comm is the executable's base name (15 bytes at most); this run's
	// own, as other tests on the machine may run the same.
	name, control := fmt.Sprintf("xcl%d", os.Getpid()), fmt.Sprintf("kep%d", os.Getpid())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	a := startAgent(t, "--exclude", "comm:^"+name+"$", "--data-dir", data, "--interval", "5s",
		"--frequency", strconv.Itoa(hz))

	// Started after the agent: the scan at its start cannot know them.
	burner := workload(t, "cpuburn-c")
	install(t, burner, filepath.Join(dir, name))
	install(t, burner, filepath.Join(dir, control))
	ex := run(t, filepath.Join(dir, name))
	keep := run(t, filepath.Join(dir, control))
	exPid, keepPid := ex.Process.Pid, keep.Process.Pid
	started := time.Now()

	// NAME is sampled (it has run for a while), and the rescan its first
	// sample causes makes the kernel drop the next ones.
	if !waitFor(30*time.Second, func() bool { return testenv.CPUSeconds(t, exPid) >= 0.5 }) {
		t.Fatalf("%s got %.2f s of CPU in 30 s", name, testenv.CPUSeconds(t, exPid))
	}
	const (
		filtered     = `scorch_bpf_samples_total{outcome="filtered"}`
		excludedUser = "scorch_samples_excluded_total"
		drains       = "scorch_drains_total"
	)
	if !waitFor(10*time.Second, func() bool { return a.metrics()[filtered] > 0 }) {
		t.Fatalf("no sample filtered in the kernel %.0f s after %s started (%s = %.0f): the rules did not reach the BPF program",
			time.Since(started).Seconds(), name, excludedUser, a.metrics()[excludedUser])
	}
	// A scrape right after a drain (whose counts it shows), and NAME's CPU
	// time then. The next drain holds every sample taken before the filter,
	// and the previous drain's user-space exclusions are counted.
	afterDrain := func() (map[string]float64, float64) {
		d0 := a.metrics()[drains]
		var m map[string]float64
		if !waitFor(10*time.Second, func() bool { m = a.metrics(); return m[drains] > d0 }) {
			t.Fatalf("no drain in 10 s\n%s", a.logs)
		}
		return m, testenv.CPUSeconds(t, exPid)
	}
	m1, cpu1 := afterDrain()
	time.Sleep(10 * time.Second)
	m2, cpu2 := afterDrain()
	df := m2[filtered] - m1[filtered]
	// A scrape may lag its drain: half a second of slack.
	least := samplesAtLeast(cpu2-cpu1, hz, 0.5)
	t.Logf("%s: %.2f s of CPU in 10 s; filtered in the kernel %.0f -> %.0f (+%.0f, %.0f expected from its CPU time, at least %.0f); excluded in user space %.0f",
		name, cpu2-cpu1, m1[filtered], m2[filtered], df, (cpu2-cpu1)*hz, least, m1[excludedUser])
	if df < math.Max(1, least) {
		t.Errorf("in-kernel filtered count grew by %.0f while %s ran %.2f s on a CPU: want at least %.0f", df, name, cpu2-cpu1, math.Max(1, least))
	}
	if m3, _ := afterDrain(); m3[excludedUser] != m1[excludedUser] {
		t.Errorf("%.0f samples of %s reached user space after the in-kernel filter excluded it", m3[excludedUser]-m1[excludedUser], name)
	}

	keepCPU := testenv.CPUSeconds(t, keepPid)
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}

	// The store, as the viewer reads it.
	st, err := store.Open(data, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var kept int64
	starts := map[time.Time]bool{}
	for _, w := range ws {
		starts[w.Start] = true
		if w.Labels["service_name"] == name {
			t.Errorf("window %s of %v holds the excluded process (%d samples)", w.Start.Format(time.TimeOnly), w.Labels, w.Samples)
		}
		p, err := st.Open(context.Background(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Sample {
			if len(s.Label["comm"]) > 0 && s.Label["comm"][0] == name || samplePid(s, exPid) {
				t.Errorf("window %s of %v has %d samples of the excluded process (comm %s, pid %d)", w.Start.Format(time.TimeOnly), w.Labels, s.Value[0], name, exPid)
			}
			if samplePid(s, keepPid) {
				kept += s.Value[0]
			}
		}
	}
	leastKept := samplesAtLeast(keepCPU, hz, 1)
	t.Logf("%d target windows over %d intervals; control %s: %d samples stored for %.2f s of CPU (at least %.0f)",
		len(ws), len(starts), control, kept, keepCPU, leastKept)
	if len(starts) < 3 {
		t.Errorf("%d windows stored, want at least 3 (the test ran for more than 15 s)", len(starts))
	}
	if float64(kept) < math.Max(1, leastKept) {
		t.Errorf("control %s: %d samples stored for %.2f s of CPU, want at least %.0f", control, kept, keepCPU, math.Max(1, leastKept))
	}
}
