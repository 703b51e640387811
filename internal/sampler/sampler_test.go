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

func TestParseKernelRelease(t *testing.T) {
	maj, min, ok := parseKernelRelease("6.18.44-fc-v595")
	if !ok || maj != 6 || min != 18 {
		t.Fatalf("got %d.%d %v", maj, min, ok)
	}
	if _, _, ok := parseKernelRelease("garbage"); ok {
		t.Fatal("garbage parsed")
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

	var total uint64
	var withUser uint64
	for i := 0; i < 4; i++ {
		time.Sleep(300 * time.Millisecond)
		samples, st, err := s.Drain()
		if err != nil {
			t.Fatal(err)
		}
		if st.Lost() != 0 {
			t.Fatalf("lost samples: %+v", st)
		}
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
	// 1.2 s at 199 Hz of a process that is always running: about 240.
	if total < 100 {
		t.Fatalf("only %d samples of a busy process in 1.2s at 199 Hz", total)
	}
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
