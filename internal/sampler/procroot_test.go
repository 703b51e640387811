package sampler

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestProcRootInPidNamespace runs the sampler in a PID namespace of its own
// (this test binary again, under unshare) with the host's /proc bind-mounted
// elsewhere, as an agent in a container without hostPID would: with
// Options.ProcRoot pointing there, the pids the program reports are found
// and the process's unwind tables load.
func TestProcRootInPidNamespace(t *testing.T) {
	if dir := os.Getenv("SCORCH_TEST_PROC_ROOT"); dir != "" {
		procRootChild(t, dir)
		return
	}
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	w := busy(t)
	hostProc := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--kill-child",
		"sh", "-c", `mount --bind /proc "$1" && mount -t proc proc /proc && shift && exec "$@"`,
		"sh", hostProc, os.Args[0], "-test.run=^TestProcRootInPidNamespace$", "-test.v")
	cmd.Env = append(os.Environ(), "SCORCH_TEST_PROC_ROOT="+hostProc, "SCORCH_TEST_PID="+strconv.Itoa(w.Process.Pid))
	out, err := cmd.CombinedOutput()
	t.Logf("in the namespace:\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("the test in its own PID namespace failed: %v", err)
	}
}

func procRootChild(t *testing.T, hostProc string) {
	pid, err := strconv.Atoi(os.Getenv("SCORCH_TEST_PID"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil && os.Getpid() != 1 {
		t.Fatalf("not in a PID namespace of our own (we are %d and see %d)", os.Getpid(), pid)
	}
	if _, err := os.Stat(fmt.Sprintf("%s/%d", hostProc, pid)); err != nil {
		t.Fatalf("the host's /proc at %s does not show %d: %v", hostProc, pid, err)
	}
	s, err := Open(Options{Frequency: 199, ProcRoot: hostProc, Filter: Filter{IncludePids: []uint32{uint32(pid)}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Open loaded the tables of the included process before sampling.
	if ts := s.TableStats(); ts.Tables == 0 {
		t.Errorf("tables through %s: %+v, want the process's", hostProc, ts)
	}
	time.Sleep(2 * time.Second)
	samples, st, err := s.Drain()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, smp := range samples {
		if smp.Pid != uint32(pid) {
			t.Fatalf("sample of pid %d passed a filter for %d", smp.Pid, pid)
		}
		n += smp.Count
	}
	t.Logf("%d samples of host pid %d, %d unwound with tables", n, pid, st.Unwound)
	if n < 20 || st.Unwound == 0 {
		t.Errorf("%d samples, %d unwound: want samples of the host pid walked with its tables", n, st.Unwound)
	}
}
