package profiler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/internal/testenv"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// fakeSymbolizer records what the profiler asks of it.
type fakeSymbolizer struct {
	mu                 sync.Mutex
	observed, refreshd map[uint32]int
	forgotten          map[uint32]int
}

func newFake() *fakeSymbolizer {
	return &fakeSymbolizer{observed: map[uint32]int{}, refreshd: map[uint32]int{}, forgotten: map[uint32]int{}}
}

func (f *fakeSymbolizer) count(m map[uint32]int, pid uint32) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[pid]
}

func (f *fakeSymbolizer) Observe(pid uint32) error {
	f.mu.Lock()
	f.observed[pid]++
	f.mu.Unlock()
	return nil
}

func (f *fakeSymbolizer) Refresh(pid uint32) error {
	f.mu.Lock()
	f.refreshd[pid]++
	f.mu.Unlock()
	return nil
}

func (f *fakeSymbolizer) Forget(pid uint32) {
	f.mu.Lock()
	f.forgotten[pid]++
	f.mu.Unlock()
}

func (f *fakeSymbolizer) UseKernelMappings(func(uint32) []process.Mapping) {}
func (f *fakeSymbolizer) Files() *process.Files                            { return nil }

func (f *fakeSymbolizer) ResolveUser(uint32, uint64) symbolizer.Frame { return symbolizer.Frame{} }
func (f *fakeSymbolizer) ResolveKernel(uint64) symbolizer.Frame       { return symbolizer.Frame{} }

// TestLifecycle runs the profiler on the real kernel and checks that it is
// the one owner of process state: a workload started after it is read
// once while it lives and released exactly once, everywhere (symbolizer,
// caller), after its exit; a process whose exit event never comes (here a
// pid tracked by hand, as if its event had been lost) is released by the
// sweep after being found gone twice; and Tracked counts both. What the
// kernel's event says of the workload (start time, name, cgroup) is what
// /proc says.
func TestLifecycle(t *testing.T) {
	testenv.RequireRoot(t)
	defer func(d time.Duration) { sweepInterval = d }(sweepInterval)
	sweepInterval = 300 * time.Millisecond

	sym := newFake()
	var mu sync.Mutex
	observedCB, forgotCB := map[uint32]int{}, map[uint32]int{}
	var seen []Observed
	var starts [][2]uint64 // tracked start time, /proc's, at each OnObserve
	var p *Profiler
	p, err := Open(Config{
		Sampler:       sampler.Options{Frequency: 499},
		DrainInterval: 100 * time.Millisecond,
		Symbolizer:    sym,
		OnObserve: func(o Observed) {
			p.tracked.mu.Lock()
			st := p.tracked.start[o.Pid]
			p.tracked.mu.Unlock()
			proc := process.StartTime(fmt.Sprintf("/proc/%d", o.Pid))
			mu.Lock()
			observedCB[o.Pid]++
			seen = append(seen, o)
			starts = append(starts, [2]uint64{st, proc})
			mu.Unlock()
		},
		OnForget: func(pid uint32) {
			mu.Lock()
			forgotCB[pid]++
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// A pid no process has (beyond pid_max), tracked as if its exit event
	// had been lost.
	const lost = 1<<22 + 17
	p.tracked.add(lost, 12345)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(Batch) {}) }()

	w := testenv.StartWorkload(t, "nofp-c", "1")
	pid := uint32(w.Process.Pid)
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (sym.count(sym.forgotten, pid) == 0 || sym.count(sym.forgotten, lost) == 0) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // anything that would release twice has
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	reads := sym.count(sym.observed, pid) + sym.count(sym.refreshd, pid)
	if sym.count(sym.observed, pid) != 1 {
		t.Errorf("the workload was observed %d times (refreshed %d), want once", sym.count(sym.observed, pid), sym.count(sym.refreshd, pid))
	}
	mu.Lock()
	defer mu.Unlock()
	if observedCB[pid] != reads {
		t.Errorf("OnObserve called %d times for %d reads of the workload", observedCB[pid], reads)
	}
	// The test's own cgroup v2 id (the inode of its directory), which the
	// workload inherits.
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	cgPath, ok := strings.CutPrefix(strings.TrimSpace(string(cg)), "0::")
	if !ok {
		t.Skipf("not a cgroup v2 host: /proc/self/cgroup is %q", cg)
	}
	fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", cgPath))
	if err != nil {
		t.Fatal(err)
	}
	cgid := fi.Sys().(*syscall.Stat_t).Ino
	for i, o := range seen {
		if o.Pid != pid {
			continue
		}
		if o.Comm != "nofp-c" || o.CgroupID != cgid {
			t.Errorf("the workload's event said comm %q, cgroup %d; want nofp-c, %d (%s)", o.Comm, o.CgroupID, cgid, cgPath)
		}
		if st := starts[i]; st[1] != 0 && st[0] != st[1] {
			t.Errorf("the workload's start time is tracked as %d, /proc says %d", st[0], st[1])
		}
	}
	if p.kernelStarts != 1 {
		t.Errorf("the kernel's start times were not found to agree with /proc's (%d)", p.kernelStarts)
	}
	for _, q := range []uint32{pid, lost} {
		if n := sym.count(sym.forgotten, q); n != 1 || forgotCB[q] != 1 {
			t.Errorf("pid %d released %d times by the symbolizer, %d by OnForget; want once", q, n, forgotCB[q])
		}
	}
	n, swept := p.Tracked()
	if swept < 1 {
		t.Errorf("Tracked: %d swept, want the lost pid at least", swept)
	}
	if p.tracked.has(pid) || p.tracked.has(lost) {
		t.Errorf("released processes still tracked (%d tracked)", n)
	}
}

// TestFilesParsedOnce: the unwinder's table worker and the symbolizer share
// one cache of opened, parsed files, so that each file a profiled process
// maps is opened and parsed once, whichever asks first. The workload is
// profiled with a pid filter: the worker loads its tables before sampling,
// the symbolizer reads its maps at its first sample, and its frames are
// named. The workload runs until the test ends (on a busy machine, loading
// the program and the tables takes seconds), and the profiler until it has
// named some of its samples (at least 1.5 s, at most 20 s).
func TestFilesParsedOnce(t *testing.T) {
	testenv.RequireRoot(t)
	w := testenv.StartWorkload(t, "nofp-c", "0") // until killed
	pid := uint32(w.Process.Pid)
	time.Sleep(100 * time.Millisecond) // past the loader
	maps, err := process.ReadMaps(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		t.Fatal(err)
	}
	files := map[[2]uint64]string{}
	for _, m := range maps {
		if m.Exec() && !m.Anonymous() && !m.Pseudo() {
			files[[2]uint64{m.Dev, m.Inode}] = m.Path
		}
	}

	sym := symbolizer.New(symbolizer.Options{})
	defer sym.Close()
	p, err := Open(Config{
		Sampler:       sampler.Options{Frequency: 499, Pids: []uint32{pid}},
		DrainInterval: 200 * time.Millisecond,
		Symbolizer:    sym,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	named := 0
	started := time.Now()
	err = p.Run(ctx, func(b Batch) {
		if named > 0 && time.Since(started) > 1500*time.Millisecond {
			cancel()
		}
		for _, s := range b.Samples {
			if s.Pid != pid || len(s.User) == 0 {
				continue
			}
			fr := sym.ResolveUser(pid, s.User[0])
			if fr.Mapping != nil && strings.HasSuffix(fr.Mapping.File, "/nofp-c") && !strings.Contains(fr.Lines[0].Function, "+0x") {
				named++
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if named == 0 {
		t.Fatal("no sample of the workload was named")
	}
	st := sym.Files().Stats()
	t.Logf("%d files mapped: %v; %+v", len(files), files, st)
	if st.Parses != uint64(len(files)) || st.Hits < uint64(len(files)) {
		t.Errorf("%d parses and %d hits for the %d files the workload maps, want one parse each and a hit each for the second user", st.Parses, st.Hits, len(files))
	}
}
