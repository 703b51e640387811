package sampler

import (
	"os/exec"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"0", 1, false}, {"0-3", 4, false}, {"0-3,5,7-8", 7, false},
		{"", 0, true}, {"3-1", 0, true}, {"a", 0, true}, {"0-x", 0, true},
	} {
		got, err := parseCPUList(tc.in)
		if (err != nil) != tc.bad || len(got) != tc.want {
			t.Errorf("parseCPUList(%q) = %v, %v; want %d cpus, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

// TestSampleBusyProcess loads the real program, runs a busy child process
// and checks its samples arrive with user stacks, that the pid filter keeps
// everything else out, and that nothing is lost.
func TestSampleBusyProcess(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := uint32(cmd.Process.Pid)

	s, err := Open(Options{Frequency: 199, Pids: []uint32{pid}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Program != ProgramTables {
		t.Errorf("loaded the %s program on a kernel with bpf_loop; want %s", s.Program, ProgramTables)
	}

	// At least four drains, so that drains of sets in use are covered.
	total, withUser := drainBusy(t, s, pid, 4, 60*time.Second, func(st Stats) {
		if st.Lost() != 0 {
			t.Fatalf("lost samples: %+v", st)
		}
	})
	if withUser*10 < total*9 {
		t.Fatalf("only %d of %d samples have a user stack", withUser, total)
	}
	// Drained sets are cleared: a drain right after a drain holds at most
	// the samples of the short gap between them.
	st, _ := s.Stats()
	if st.Filtered == 0 {
		t.Errorf("no filtered samples counted on a machine with other processes: %+v", st)
	}
}

// drainBusy drains s every 300 ms, at least minDrains times and until 200
// samples of the busy process pid arrived (about 1 s at 199 Hz with a CPU
// to itself, longer on a busy host), failing after within. check sees the
// stats of each drain. It returns the samples of pid and those of them
// with a user stack; a sample of another process fails the test (s
// filters for pid).
func drainBusy(t *testing.T, s *Sampler, pid uint32, minDrains int, within time.Duration, check func(Stats)) (total, withUser uint64) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; i < minDrains || total < 200; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d samples of a busy process in %v at 199 Hz", total, within)
		}
		time.Sleep(300 * time.Millisecond)
		samples, st, err := s.Drain()
		if err != nil {
			t.Fatal(err)
		}
		check(st)
		for _, smp := range samples {
			if smp.Pid != pid {
				t.Fatalf("sample of pid %d passed a filter for %d", smp.Pid, pid)
			}
			total += smp.Count
			if len(smp.User) > 0 {
				withUser += smp.Count
			}
		}
	}
	return total, withUser
}
