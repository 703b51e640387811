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
// frequency, and MapBytes reports what the kernel charges for each map:
// a stack map of N entries holds N stacks of 127 addresses.
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
	t.Logf("%d CPUs, %d entries: %.1f MiB in all: %v", s.CPUs, s.StackMapEntries, float64(total)/(1<<20), mb)
	per := float64(mb["stacks_kern0"]) / float64(s.StackMapEntries)
	if per < 127*8 || per > 2*127*8 {
		t.Errorf("stacks_kern0: %d bytes for %d entries (%.0f each), want 1016 to 2032 each", mb["stacks_kern0"], s.StackMapEntries, per)
	}
	if len(mb) < 20 || mb["unwind_rows"] < DefaultUnwindTableBytes {
		t.Errorf("MapBytes lists %d maps, unwind_rows %d bytes", len(mb), mb["unwind_rows"])
	}
}
