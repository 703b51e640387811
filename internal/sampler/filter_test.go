package sampler

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

func TestFilterEntries(t *testing.T) {
	f := Filter{IncludePids: []uint32{1, 2}, ExcludePids: []uint32{2, 3}, IncludeCgroups: []uint64{7}, ExcludeCgroups: []uint64{7}}
	pids, cgroups, err := f.entries()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]uint8{1: filterInclude, 2: filterInclude | filterExclude, 3: filterExclude}
	if fmt.Sprint(pids) != fmt.Sprint(want) {
		t.Errorf("pid entries %v, want %v", pids, want)
	}
	if cgroups[7] != filterInclude|filterExclude || len(cgroups) != 1 {
		t.Errorf("cgroup entries %v", cgroups)
	}
	big := Filter{ExcludePids: make([]uint32, MaxFilterPids+1)}
	for i := range big.ExcludePids {
		big.ExcludePids[i] = uint32(i)
	}
	if _, _, err := big.entries(); err == nil {
		t.Errorf("%d pids accepted, the map holds %d", MaxFilterPids+1, MaxFilterPids)
	}
	if (Filter{}).Empty() != true || f.Empty() {
		t.Error("Empty is wrong")
	}
}

func busy(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// testCgroup creates a cgroup v2 directory for the test and moves pid into
// it; cleanup kills nothing (the caller's cleanups do) but removes the
// directory once it is empty.
func testCgroup(t *testing.T, pid int) (dir string, id uint64) {
	t.Helper()
	mnt, err := container.Cgroup2Mount("/proc")
	if err != nil {
		t.Fatalf("this test needs a cgroup2 mount: %v", err)
	}
	dir = filepath.Join(mnt, fmt.Sprintf("scorch-filter-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Move whatever is left back to the root, then remove it.
		os.WriteFile(filepath.Join(mnt, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		for i := 0; i < 50; i++ {
			if err := os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("could not remove test cgroup %s", dir)
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("move %d into %s: %v", pid, dir, err)
	}
	if id, err = container.CgroupID(dir); err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// collect drains once to drop what was sampled under the previous filter,
// then for d and returns the sample counts per pid and the Stats growth.
func collect(t *testing.T, s *Sampler, d time.Duration) (map[uint32]uint64, Stats) {
	t.Helper()
	if _, _, err := s.Drain(); err != nil {
		t.Fatal(err)
	}
	before, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]uint64{}
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		samples, _, err := s.Drain()
		if err != nil {
			t.Fatal(err)
		}
		for _, smp := range samples {
			got[smp.Pid] += smp.Count
		}
	}
	after, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return got, Stats{
		Samples:  after.Samples - before.Samples,
		Filtered: after.Filtered - before.Filtered,
		Excluded: after.Excluded - before.Excluded,
	}
}

// TestFilter runs two busy processes and changes the in-kernel filter
// while sampling: whatever a filter leaves out never reaches Drain and is
// counted by the program instead.
func TestFilter(t *testing.T) {
	testenv.RequireRoot(t)
	a, b := busy(t), busy(t)
	pa, pb := uint32(a.Process.Pid), uint32(b.Process.Pid)
	_, cg := testCgroup(t, b.Process.Pid)

	s, err := Open(Options{Frequency: 199, FramePointersOnly: true, Filter: Filter{ExcludePids: []uint32{pa}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Each busy process is worth about 199 samples a second when it has a
	// CPU to itself; with other work on the machine, a good deal less.
	const d = 1500 * time.Millisecond
	const min = 20
	for _, tc := range []struct {
		name        string
		filter      Filter
		kept, left  uint32
		excludedSet bool // the left-out process counts as excluded (else filtered)
	}{
		{"exclude pid", Filter{ExcludePids: []uint32{pa}}, pb, pa, true},
		{"exclude cgroup", Filter{ExcludeCgroups: []uint64{cg}}, pa, pb, true},
		{"include cgroup", Filter{IncludeCgroups: []uint64{cg}}, pb, pa, false},
		{"include pid", Filter{IncludePids: []uint32{pa}}, pa, pb, false},
		{"include both, exclude pid", Filter{IncludePids: []uint32{pa, pb}, ExcludePids: []uint32{pa}}, pb, pa, true},
		{"include pid, exclude its cgroup", Filter{IncludePids: []uint32{pa, pb}, ExcludeCgroups: []uint64{cg}}, pa, pb, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.SetFilter(tc.filter); err != nil {
				t.Fatal(err)
			}
			got, st := collect(t, s, d)
			t.Logf("kept pid %d: %d samples, left-out pid %d: %d; stats growth %+v", tc.kept, got[tc.kept], tc.left, got[tc.left], st)
			if got[tc.left] != 0 {
				t.Errorf("%d samples of left-out pid %d were drained", got[tc.left], tc.left)
			}
			if got[tc.kept] < min {
				t.Errorf("only %d samples of pid %d, want at least %d", got[tc.kept], tc.kept, min)
			}
			counter, other := st.Filtered, st.Excluded
			if tc.excludedSet {
				counter, other = st.Excluded, st.Filtered
			}
			if counter < min {
				t.Errorf("the counter of left-out samples grew by %d, want at least %d (%+v)", counter, min, st)
			}
			if tc.filter.IncludePids == nil && tc.filter.IncludeCgroups == nil && other != 0 {
				t.Errorf("without include sets, %d samples counted as outside them", other)
			}
		})
	}

	// Back to no filter: both processes are sampled again.
	if err := s.SetFilter(Filter{}); err != nil {
		t.Fatal(err)
	}
	got, st := collect(t, s, d)
	if got[pa] < min || got[pb] < min || st.Filtered != 0 || st.Excluded != 0 {
		t.Errorf("without a filter: %d and %d samples, %+v", got[pa], got[pb], st)
	}
	var n int
	var k uint32
	var v uint8
	for it := s.objs.PidFilter.Iterate(); it.Next(&k, &v); {
		n++
	}
	if n != 0 {
		t.Errorf("an empty filter left %d pid entries", n)
	}
}

// TestFilterForgetsExitedProcess checks that the exit hook removes the
// filter entry of a process that exits, so a new process with its pid is
// not filtered by mistake.
func TestFilterForgetsExitedProcess(t *testing.T) {
	testenv.RequireRoot(t)
	c := exec.Command("sleep", "30")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(c.Process.Pid)
	s, err := Open(Options{Frequency: 19, FramePointersOnly: true, Filter: Filter{ExcludePids: []uint32{pid}}})
	if err != nil {
		c.Process.Kill()
		c.Wait()
		t.Fatal(err)
	}
	defer s.Close()
	if !s.LifecycleHooks() {
		t.Fatal("no exit hook on this kernel")
	}
	var v uint8
	if err := s.objs.PidFilter.Lookup(pid, &v); err != nil || v != filterExclude {
		t.Fatalf("entry of %d: %d, %v", pid, v, err)
	}
	c.Process.Kill()
	c.Wait()
	if err := s.objs.PidFilter.Lookup(pid, &v); err == nil {
		t.Errorf("the entry of exited process %d is still there", pid)
	}
}
