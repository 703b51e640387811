package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/sampler"
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

// copyWorkload copies testdata/bin/cpuburn-c to dir/name and starts it.
func copyWorkload(t *testing.T, dir, name string) *exec.Cmd {
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

// TestKernelFilterDropsSamples runs the agent's rules through the real BPF
// program: the samples of the processes they exclude never reach user
// space, by executable (a pid entry) and by cgroup (a cgroup entry).
func TestKernelFilterDropsSamples(t *testing.T) {
	mnt, base, _ := testCgroups(t)
	dir := t.TempDir()
	keep := copyWorkload(t, dir, "burn-keep")
	drop := copyWorkload(t, dir, "burn-drop")
	pk, pd := uint32(keep.Process.Pid), uint32(drop.Process.Pid)
	if err := os.WriteFile(filepath.Join(mnt, base, "drop", "cgroup.procs"), []byte(strconv.Itoa(int(pd))), 0); err != nil {
		t.Fatal(err)
	}

	s, err := sampler.Open(sampler.Options{Frequency: 199, FramePointersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	for _, tc := range []struct {
		rule             string
		wantPid, wantCgr bool // the excluded process is listed by pid / by its cgroup
	}{
		{"exe:/burn-drop$", true, false},
		{"cgroup:^" + base + "/drop$", false, true},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			f, _, err := kernelFilter(nil, rules(t, tc.rule), "/proc", mnt)
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(f.ExcludePids, pk) || slices.Contains(f.ExcludePids, pd) != tc.wantPid || (len(f.ExcludeCgroups) == 1) != tc.wantCgr {
				t.Fatalf("filter %+v for keep %d, drop %d", f, pk, pd)
			}
			if err := s.SetFilter(f); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Drain(); err != nil { // samples taken before
				t.Fatal(err)
			}
			st0, _ := s.Stats()
			got := map[uint32]uint64{}
			for i := 0; i < 6; i++ {
				time.Sleep(250 * time.Millisecond)
				samples, _, err := s.Drain()
				if err != nil {
					t.Fatal(err)
				}
				for _, smp := range samples {
					got[smp.Pid] += smp.Count
				}
			}
			st1, _ := s.Stats()
			excluded := st1.Excluded - st0.Excluded
			t.Logf("keep %d: %d samples, drop %d: %d, excluded in the kernel: %d", pk, got[pk], pd, got[pd], excluded)
			if got[pd] != 0 {
				t.Errorf("%d samples of the excluded process reached user space", got[pd])
			}
			if got[pk] < 20 || excluded < 20 {
				t.Errorf("want at least 20 samples of the kept process and 20 excluded")
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
