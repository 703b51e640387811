package sampler

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestKernelMappingAfterExit checks that the mappings the walker learned
// for a sampled process outlive it until Forget, and describe its files
// as its maps did: every user address of its samples lies in a mapping
// KernelMappings returns after the process has exited, with the device,
// inode and offset /proc/PID/maps gave while it ran.
func TestKernelMappingAfterExit(t *testing.T) {
	testenv.RequireRoot(t)
	w := startWorkload(t, "nofp-c", "60")
	pid := uint32(w.Process.Pid)
	s, err := Open(Options{Frequency: 499, Pids: []uint32{pid}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()
	waitFor(t, "the process's tables", func() bool { return s.TableStats().Tables >= 3 })
	time.Sleep(500 * time.Millisecond)
	maps, err := process.ReadMaps(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		t.Fatal(err)
	}
	w.Process.Kill()
	w.Wait()
	samples, _, err := s.Drain()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, smp := range samples {
		if smp.Pid != pid {
			continue
		}
		for _, pc := range smp.User {
			n++
			var got process.Mapping
			ok := false
			for _, m := range s.KernelMappings(pid) {
				if m.Start <= pc && pc < m.End {
					got, ok = m, true
				}
			}
			if !ok {
				t.Fatalf("no kernel mapping for %#x of the exited process", pc)
			}
			var want *process.Mapping
			for i := range maps {
				if maps[i].Exec() && maps[i].Start <= pc && pc < maps[i].End {
					want = &maps[i]
				}
			}
			if want == nil {
				t.Fatalf("%#x is in none of the process's mappings", pc)
			}
			if got.Start != want.Start || got.End != want.End || got.Offset != want.Offset ||
				(want.Path != "[vdso]" && (got.Dev != want.Dev || got.Inode != want.Inode)) {
				t.Fatalf("kernel mapping of %#x: %+v, want what the maps said: %+v", pc, got, *want)
			}
		}
	}
	if n == 0 {
		t.Fatal("no user address sampled")
	}
	s.Forget(pid)
	var p bpf.ScorchUnwindProc
	if err := s.objs.UnwindProcs.Lookup(pid, &p); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the kernel's entry after Forget: err %v, want none", err)
	}
}
