package sampler

import (
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

func TestStackMapEntriesFor(t *testing.T) {
	for _, tc := range []struct{ cpus, freq, want int }{
		{2, 99, 1024},     // 396 samples in two seconds: the floor
		{2, 999, 4096},    // 3996
		{8, 999, 16384},   // 15984
		{64, 999, 131072}, // 127872
		{1 << 12, 10000, maxStackMapEntries},
		{0, 0, 1024},
	} {
		if got := StackMapEntriesFor(tc.cpus, tc.freq); got != tc.want {
			t.Errorf("StackMapEntriesFor(%d, %d) = %d, want %d", tc.cpus, tc.freq, got, tc.want)
		}
	}
}

// TestMapMemory: by default the stack maps are sized from the CPUs and the
// frequency; where the kernel lets perf_event programs use hash maps that
// are not preallocated (6.1+), they take memory as they fill, so a 2-CPU
// host at 99 Hz holds at most 24 MiB of maps; MapBytes reports what the
// kernel charges for each map.
func TestMapMemory(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := Open(Options{Frequency: 99})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if want := StackMapEntriesFor(s.CPUs, 99); s.StackMapEntries != want {
		t.Errorf("stack maps of %d entries, want %d for %d CPUs at 99 Hz", s.StackMapEntries, want, s.CPUs)
	}
	mb := s.MapBytes()
	var total uint64
	for _, n := range mb {
		total += n
	}
	t.Logf("%d CPUs, %d entries, growing maps %v: %.1f MiB in all: %v", s.CPUs, s.StackMapEntries, s.GrowingMaps, float64(total)/(1<<20), mb)
	if len(mb) < 20 || mb["unwind_rows"] < DefaultUnwindTableBytes {
		t.Errorf("MapBytes lists %d maps, unwind_rows %d bytes", len(mb), mb["unwind_rows"])
	}
	if want := uint64(procEntriesFor(s.CPUs)) * 864; mb["unwind_procs"] < want || mb["unwind_procs"] > want*5/4 {
		t.Errorf("unwind_procs: %d bytes, want about %d", mb["unwind_procs"], want)
	}
	full := uint64(s.StackMapEntries) * 127 * 8 // preallocated: every entry
	switch {
	case !s.GrowingMaps:
		t.Logf("this kernel preallocates the stack maps")
		if mb["stacks_kern0"] < full {
			t.Errorf("stacks_kern0: %d bytes, want at least %d preallocated", mb["stacks_kern0"], full)
		}
	case mb["stacks_kern0"] > full/8:
		t.Errorf("stacks_kern0: %d bytes before any sample, want far less than the %d of its entries", mb["stacks_kern0"], full)
	case s.CPUs <= 2 && total > 24<<20:
		t.Errorf("%.1f MiB of maps on %d CPUs at 99 Hz, want at most 24", float64(total)/(1<<20), s.CPUs)
	}
}
