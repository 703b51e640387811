package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

func rules(t *testing.T, specs ...string) []Rule {
	t.Helper()
	var out []Rule
	for _, s := range specs {
		r, err := parseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// fakeProc writes a /proc with the given processes: pid -> comm, exe,
// cgroup v2 path.
func fakeProc(t *testing.T, procs map[uint32][3]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(int(pid)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "comm"), []byte(p[0]+"\n"), 0o644)
		if p[1] != "" {
			os.Symlink(p[1], filepath.Join(dir, "exe"))
		}
		os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::"+p[2]+"\n"), 0o644)
	}
	os.MkdirAll(filepath.Join(root, "self"), 0o755) // not a pid: ignored
	return root
}

func sorted[T uint32 | uint64](s []T) []T {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestKernelFilterRules(t *testing.T) {
	proc := fakeProc(t, map[uint32][3]string{
		10: {"nginx", "/usr/sbin/nginx", "/system.slice/nginx.service"},
		11: {"kworker/0:1", "", "/"},
		12: {"postgres", "/usr/lib/postgresql/bin/postgres", "/system.slice/docker-abc.scope"},
		13: {"bash", "/usr/bin/bash (deleted)", "/user.slice"},
	})
	for _, tc := range []struct {
		include, exclude []string
		want             sampler.Filter
	}{
		{nil, nil, sampler.Filter{}},
		{nil, []string{"comm:^kworker"}, sampler.Filter{ExcludePids: []uint32{11}}},
		{nil, []string{"exe:/bash$"}, sampler.Filter{ExcludePids: []uint32{13}}},
		{[]string{"exe:nginx", "comm:postgres"}, nil, sampler.Filter{ExcludePids: []uint32{11, 13}}},
		{[]string{"pid:12", "pid:99"}, nil, sampler.Filter{IncludePids: []uint32{12, 99}}},
		{[]string{"pid:12", "pid:10"}, []string{"cgroup:docker-"}, sampler.Filter{IncludePids: []uint32{10, 12}, ExcludePids: []uint32{12}}},
		// Without a cgroup root, cgroup rules resolve to pids.
		{[]string{"cgroup:^/system.slice/"}, nil, sampler.Filter{ExcludePids: []uint32{11, 13}}},
	} {
		f, scan, err := kernelFilter(rules(t, tc.include...), rules(t, tc.exclude...), proc, "")
		if err != nil {
			t.Fatal(err)
		}
		f.IncludePids, f.ExcludePids = sorted(f.IncludePids), sorted(f.ExcludePids)
		if fmt.Sprint(f) != fmt.Sprint(tc.want) {
			t.Errorf("include %q exclude %q: got %+v, want %+v", tc.include, tc.exclude, f, tc.want)
		}
		if (len(tc.include) > 0 || len(tc.exclude) > 0) && scan.Procs != 4 {
			t.Errorf("scanned %d processes, want 4", scan.Procs)
		}
	}
}

// TestFilterLoopEvents drives the filter loop with the events the profiler
// passes on: a new process the rules exclude is filtered in the kernel
// within a second of its first sample, not at the next periodic scan; one
// they keep costs no scan; an exec of a listed process is checked again;
// a burst of new processes costs one scan per filterMinGap.
func TestFilterLoopEvents(t *testing.T) {
	proc := fakeProc(t, map[uint32][3]string{10: {"bash", "/usr/bin/bash", "/"}})
	l := newFilterLoop(nil, rules(t, "comm:^burnx$"), proc, slog.New(slog.DiscardHandler))
	sets := make(chan sampler.Filter, 100)
	l.set = func(f sampler.Filter) error {
		sets <- f
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { l.run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	addProc := func(pid uint32, comm string) {
		dir := filepath.Join(proc, strconv.Itoa(int(pid)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// next waits for the next filter set, for at most d.
	next := func(d time.Duration) (sampler.Filter, time.Duration, bool) {
		start := time.Now()
		select {
		case f := <-sets:
			l.installed(f) // as run does after set returns
			return f, time.Since(start), true
		case <-time.After(d):
			return sampler.Filter{}, d, false
		}
	}

	// A process the rules keep: no scan.
	addProc(11, "other")
	l.onEvent(sampler.Event{Type: sampler.EventNewPid, Pid: 11})
	if f, _, ok := next(2 * filterMinGap); ok {
		t.Fatalf("a new process the rules keep caused a scan: %+v", f)
	}

	// One they exclude: a scan within a second (well before filterPeriod).
	addProc(12, "burnx")
	l.onEvent(sampler.Event{Type: sampler.EventNewPid, Pid: 12})
	f, took, ok := next(time.Second)
	if !ok || !slices.Equal(f.ExcludePids, []uint32{12}) {
		t.Fatalf("new excluded process: filter %+v after %v (set: %v), want pid 12 excluded within 1s", f, took, ok)
	}
	t.Logf("excluded within %v of its first sample", took)

	// It calls exec and is now something the rules keep: it is listed no
	// more.
	addProc(12, "python3")
	l.onEvent(sampler.Event{Type: sampler.EventExec, Pid: 12})
	if f, took, ok = next(time.Second); !ok || len(f.ExcludePids) != 0 {
		t.Fatalf("exec of a listed process: filter %+v after %v (set: %v), want none excluded within 1s", f, took, ok)
	}
	// An exec of a process not listed: no scan.
	l.onEvent(sampler.Event{Type: sampler.EventExec, Pid: 11})
	if f, _, ok := next(2 * filterMinGap); ok {
		t.Fatalf("exec of an unlisted process caused a scan: %+v", f)
	}

	// A burst: 100 excluded processes announced within a moment.
	start := time.Now()
	for pid := uint32(100); pid < 200; pid++ {
		addProc(pid, "burnx")
		l.onEvent(sampler.Event{Type: sampler.EventNewPid, Pid: pid})
	}
	sent := time.Since(start)
	var scans int
	for {
		f, _, ok := next(2 * filterMinGap)
		if !ok {
			t.Fatalf("burst: %d scans, the last did not list all 100 processes", scans)
		}
		scans++
		if len(f.ExcludePids) == 100 {
			break
		}
	}
	elapsed := time.Since(start)
	t.Logf("burst of 100 new processes sent in %v: %d scans in %v", sent, scans, elapsed)
	if most := 2 + int(elapsed/filterMinGap); scans > most {
		t.Errorf("burst of 100 new processes in %v: %d scans in %v, want at most %d (one per %v)", sent, scans, elapsed, most, filterMinGap)
	}

	// A drain brings excluded samples of a process no event announced (a
	// kernel thread): it is listed within a second.
	addProc(13, "burnx")
	l.sawExcluded(13)
	if f, took, ok = next(time.Second); !ok || !slices.Contains(f.ExcludePids, 13) {
		t.Fatalf("excluded samples of an unlisted process: filter %+v after %v (set: %v), want pid 13 within 1s", f, took, ok)
	}
	// Listed now, or idle, or asked for already (gone before the scan):
	// no scan.
	l.sawExcluded(13)
	l.sawExcluded(0)
	l.sawExcluded(14)
	if _, _, ok := next(time.Second); !ok {
		t.Fatal("excluded samples of a process that exited caused no scan")
	}
	l.sawExcluded(14)
	if f, _, ok := next(2 * filterMinGap); ok {
		t.Fatalf("a second drain with samples of the same unlisted process caused a scan: %+v", f)
	}
}

// testCgroups creates root/name/{keep,drop,drop/child} under the cgroup2
// mount and returns the mount, the base path as /proc/PID/cgroup spells it,
// and the ids.
func testCgroups(t *testing.T) (mnt, base string, ids map[string]uint64) {
	t.Helper()
	requireRoot(t)
	mnt, err := container.Cgroup2Mount("/proc")
	if err != nil {
		t.Fatalf("this test needs a cgroup2 mount: %v", err)
	}
	base = fmt.Sprintf("/scorch-agent-filter-%d", os.Getpid())
	ids = map[string]uint64{}
	for _, sub := range []string{"", "/keep", "/drop", "/drop/child"} {
		dir := filepath.Join(mnt, base+sub)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeCgroup(t, mnt, dir) })
		if ids[sub], err = container.CgroupID(dir); err != nil {
			t.Fatal(err)
		}
	}
	return mnt, base, ids
}

// removeCgroup moves the processes left in dir to the root cgroup and
// removes it (cleanups run children first).
func removeCgroup(t *testing.T, mnt, dir string) {
	for i := 0; i < 100; i++ {
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, p := range strings.Fields(string(b)) {
				os.WriteFile(filepath.Join(mnt, "cgroup.procs"), []byte(p), 0)
			}
		}
		if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("could not remove test cgroup %s", dir)
}

func TestKernelFilterCgroups(t *testing.T) {
	mnt, base, ids := testCgroups(t)
	proc := fakeProc(t, nil)

	// An anchored exclude rule: the child of drop does not match.
	f, scan, err := kernelFilter(nil, rules(t, "cgroup:"+base+"/drop$"), proc, mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.ExcludeCgroups) != 1 || f.ExcludeCgroups[0] != ids["/drop"] {
		t.Errorf("exclude %s/drop$: cgroups %v, want [%d] (ids %v)", base, f.ExcludeCgroups, ids["/drop"], ids)
	}
	if scan.Cgroups < 5 {
		t.Errorf("walked %d cgroups, want at least the root and the 4 of the test", scan.Cgroups)
	}

	// Including by cgroup excludes every other cgroup of the tree.
	f, _, err = kernelFilter(rules(t, "cgroup:"+base+"/keep"), nil, proc, mnt)
	if err != nil {
		t.Fatal(err)
	}
	ex := map[uint64]bool{}
	for _, id := range f.ExcludeCgroups {
		ex[id] = true
	}
	root, _ := container.CgroupID(mnt)
	if ex[ids["/keep"]] || !ex[ids["/drop"]] || !ex[ids["/drop/child"]] || !ex[root] || len(f.IncludeCgroups) != 0 {
		t.Errorf("include %s/keep: excluded %v (ids %v, root %d)", base, f.ExcludeCgroups, ids, root)
	}

	// Mixed include rules cannot be decided by cgroup alone.
	f, _, err = kernelFilter(rules(t, "cgroup:"+base+"/keep", "comm:x"), nil, proc, mnt)
	if err != nil || len(f.ExcludeCgroups) != 0 {
		t.Errorf("mixed include rules: cgroups %v, %v", f.ExcludeCgroups, err)
	}
}

// copyWorkload copies testdata/bin/cpuburn-c to dir/name and starts it,
// in cgroup (a cgroup2 directory) unless that is "".
func copyWorkload(t *testing.T, dir, name, cgroup string) *exec.Cmd {
	t.Helper()
	src := startWorkloadPath(t, "cpuburn-c")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dst)
	if cgroup != "" {
		// Born in the cgroup (clone3 CLONE_INTO_CGROUP), so that no
		// sample of it is taken elsewhere.
		d, err := os.Open(cgroup)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(d.Fd())}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// startWorkloadPath returns the path of a workload binary, built.
func startWorkloadPath(t *testing.T, name string) string {
	return testenv.Workload(t, name)
}

// counterValue reads a counter of the agent's registry.
func counterValue(t *testing.T, a *Agent, name string) (v float64) {
	t.Helper()
	mfs, err := a.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitUntil polls cond every 20 ms for up to d, and fails the test if it
// does not hold by then.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
	}
}

// kernelFiltered is the agent's count of samples the BPF program left out
// (what /metrics shows as outcome="filtered"), as of the last drain.
func kernelFiltered(a *Agent) uint64 {
	a.m.mu.Lock()
	defer a.m.mu.Unlock()
	return a.m.stats.Filtered + a.m.stats.Excluded
}

// TestKernelFilterDropsSamples runs the agent (Agent.Run, as `scorch agent`
// does) with an exclude rule and starts the processes after it: the
// excluded one by executable (a pid entry), then by a cgroup created after
// the agent started (a cgroup entry). Its first samples reach user space
// (and are dropped there); within seconds the agent's rescan stops them in
// the kernel, where they are counted in step with the CPU time it burns,
// and no stored window holds it.
func TestKernelFilterDropsSamples(t *testing.T) {
	requireRoot(t)
	const hz = 199
	for _, tc := range []struct {
		name     string
		rule     func(base, dir string) string
		inCgroup bool // start the excluded process in base/drop
	}{
		// Paths of this run only: other tests on the machine may run
		// programs of the same names.
		{"exe", func(_, dir string) string { return "exe:^" + regexp.QuoteMeta(filepath.Join(dir, "burn-drop")) + "$" }, false},
		{"cgroup", func(base, _ string) string { return "cgroup:^" + base + "/drop$" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := fmt.Sprintf("/scorch-agent-filter-%d", os.Getpid())
			dataDir, dir := t.TempDir(), t.TempDir()
			cfg := testConfig(t, "--exclude", tc.rule(base, dir), "--data-dir", dataDir, "--listen", "",
				"--interval", "2s", "--frequency", strconv.Itoa(hz))
			a, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			var once sync.Once
			stop := func() (err error) {
				once.Do(func() { cancel(); err = <-done })
				return err
			}
			defer stop()
			waitReady(t, a)

			// Everything below is new to the agent.
			keep := copyWorkload(t, dir, "burn-keep", "")
			cg := ""
			if tc.inCgroup {
				mnt, b, _ := testCgroups(t)
				if b != base {
					t.Fatalf("test cgroup %s, want %s", b, base)
				}
				cg = filepath.Join(mnt, base, "drop")
			}
			drop := copyWorkload(t, dir, "burn-drop", cg)
			pk, pd := keep.Process.Pid, drop.Process.Pid

			waitUntil(t, 30*time.Second, "burn-drop to run 0.5 s", func() bool { return testenv.CPUSeconds(t, pd) >= 0.5 })
			// Its first samples caused a scan: the kernel drops the next.
			waitUntil(t, 10*time.Second, "samples filtered in the kernel", func() bool { return kernelFiltered(a) > 0 })
			// Snapshots right after a drain (whose counts they hold) and
			// the CPU time then. The next drain holds every sample taken
			// before the filter, and the previous one's user-space
			// exclusions are counted.
			type snap struct {
				filtered uint64
				excluded float64
				cpu      float64
			}
			afterDrain := func() snap {
				d0 := counterValue(t, a, "scorch_drains_total")
				waitUntil(t, 10*time.Second, "a drain", func() bool { return counterValue(t, a, "scorch_drains_total") > d0 })
				return snap{kernelFiltered(a), counterValue(t, a, "scorch_samples_excluded_total"), testenv.CPUSeconds(t, pd)}
			}
			s1 := afterDrain()
			time.Sleep(5 * time.Second)
			s2 := afterDrain()

			n := (s2.cpu - s1.cpu) * hz
			least := max(1, n-4*math.Sqrt(n)-hz/2) // a snapshot may lag its drain
			t.Logf("burn-drop (%d): %.2f s of CPU; in-kernel filtered +%d (%.0f expected, at least %.0f); user-space excluded %.0f",
				pd, s2.cpu-s1.cpu, s2.filtered-s1.filtered, n, least, s1.excluded)
			if float64(s2.filtered-s1.filtered) < least {
				t.Errorf("in-kernel filtered count grew by %d, want at least %.0f", s2.filtered-s1.filtered, least)
			}

			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if e := counterValue(t, a, "scorch_samples_excluded_total"); e != s1.excluded {
				t.Errorf("%.0f samples of the excluded process reached user space after the filter was in place", e-s1.excluded)
			}
			st, err := store.Open(dataDir, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ws, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			var kept int64
			for _, w := range ws {
				p, err := st.Open(context.Background(), w.ID)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range p.Sample {
					switch {
					case samplePid(s, pd):
						t.Errorf("window %v holds samples of the excluded process", w.Labels)
					case samplePid(s, pk):
						kept += s.Value[0]
					}
				}
			}
			if kept == 0 {
				t.Errorf("no window of burn-keep (%d) among %d", pk, len(ws))
			}
		})
	}
}

// BenchmarkKernelFilter measures one scan of this host's /proc and cgroup
// tree for typical rules (the agent runs one every filterPeriod).
func BenchmarkKernelFilter(b *testing.B) {
	var ex []Rule
	for _, s := range []string{"comm:^kworker", "exe:/usr/bin/sleep$", "cgroup:^/system.slice/cron"} {
		r, err := parseRule(s)
		if err != nil {
			b.Fatal(err)
		}
		ex = append(ex, r)
	}
	mnt, _ := container.Cgroup2Mount("/proc")
	b.ReportAllocs()
	var scan filterScan
	for b.Loop() {
		var err error
		if _, scan, err = kernelFilter(nil, ex, "/proc", mnt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(scan.Procs), "procs")
	b.ReportMetric(float64(scan.Cgroups), "cgroups")
}
