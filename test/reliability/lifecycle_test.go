package reliability

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// heldBPF lists the ids of the BPF objects ("prog", "map", "link") that
// process pid holds descriptors of, from /proc/PID/fdinfo.
func heldBPF(pid int) map[string]map[int]bool {
	out := map[string]map[int]bool{"prog": {}, "map": {}, "link": {}}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	for _, e := range ents {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			kind, isID := strings.CutSuffix(k, "_id")
			if !ok || !isID || out[kind] == nil {
				continue
			}
			if id, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				out[kind][id] = true
			}
		}
	}
	return out
}

// bpfObjects lists the ids of all BPF objects of one kind on the host.
func bpfObjects(t *testing.T, kind string) map[int]bool {
	t.Helper()
	out, err := exec.Command("bpftool", "-j", kind, "show").Output()
	if err != nil {
		t.Fatalf("bpftool %s show: %v", kind, err)
	}
	var objs []struct {
		ID int `json:"id"`
	}
	if err := json.Unmarshal(out, &objs); err != nil {
		t.Fatalf("bpftool %s show: %v", kind, err)
	}
	ids := map[int]bool{}
	for _, o := range objs {
		ids[o.ID] = true
	}
	return ids
}

func perfEventFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); strings.Contains(l, "perf_event") {
			n++
		}
	}
	return n
}

// TestRestarts starts and stops the agent 20 times: every BPF program, map
// and link it held is gone after each stop, nothing is pinned, and each
// run opened one perf event per CPU and dropped its capabilities.
func TestRestarts(t *testing.T) {
	requireRoot(t)
	testenv.RequireTool(t, "bpftool")
	pinsBefore, _ := os.ReadDir("/sys/fs/bpf")
	dir := t.TempDir()
	held := map[string]map[int]bool{"prog": {}, "map": {}, "link": {}}
	for i := 0; i < 20; i++ {
		a := startAgent(t, "--interval", "1s", "--data-dir", dir)
		var n []int
		mine := heldBPF(a.pid)
		for _, kind := range []string{"prog", "map", "link"} {
			for id := range mine[kind] {
				held[kind][id] = true
			}
			n = append(n, len(mine[kind]))
		}
		if n[0] == 0 || n[1] == 0 {
			t.Fatalf("run %d: the agent holds no BPF programs or maps? %v", i, n)
		}
		if i == 0 {
			t.Logf("one agent holds progs/maps/links %v, %d perf events", n, perfEventFDs(a.pid))
			checkCaps(t, a.pid)
		}
		if pe := perfEventFDs(a.pid); pe == 0 {
			t.Errorf("run %d: no perf event open", i)
		}
		if err := a.stop(); err != nil {
			t.Fatalf("run %d: stop: %v\n%s", i, err, a.logs)
		}
	}
	// Freeing is asynchronous in the kernel (RCU): give it a moment.
	var left []string
	waitFor(5*time.Second, func() bool {
		left = left[:0]
		for kind, ids := range held {
			now := bpfObjects(t, kind)
			for id := range ids {
				if now[id] {
					left = append(left, fmt.Sprintf("%s %d", kind, id))
				}
			}
		}
		return len(left) == 0
	})
	if len(left) != 0 {
		t.Errorf("after 20 runs these BPF objects of the agents remain: %v", left)
	}
	t.Logf("20 runs held %d programs, %d maps, %d links in all; none remain", len(held["prog"]), len(held["map"]), len(held["link"]))
	pinsAfter, _ := os.ReadDir("/sys/fs/bpf")
	for _, p := range pinsAfter {
		if strings.Contains(p.Name(), "scorch") {
			t.Errorf("pinned object left: /sys/fs/bpf/%s", p.Name())
		}
	}
	if len(pinsAfter) > len(pinsBefore) {
		t.Logf("note: /sys/fs/bpf has %d entries, %d before (other tests run on this host)", len(pinsAfter), len(pinsBefore))
	}
}

// checkCaps reads the capability sets of every thread of the agent: only
// the four symbolization needs remain, and no_new_privs is set.
func checkCaps(t *testing.T, pid int) {
	t.Helper()
	const want = 1<<19 | 1<<2 | 1<<34 | 1<<40 // SYS_PTRACE, DAC_READ_SEARCH, SYSLOG, CHECKPOINT_RESTORE
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if len(tasks) < 2 {
		t.Fatalf("agent has %d threads", len(tasks))
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "CapEff", "CapPrm", "CapBnd":
				var got uint64
				fmt.Sscanf(v, "%x", &got)
				if got != want {
					t.Errorf("thread %s: %s %#x, want %#x", task.Name(), k, got, uint64(want))
				}
			case "NoNewPrivs":
				if v != "1" {
					t.Errorf("thread %s: NoNewPrivs %s", task.Name(), v)
				}
			}
		}
	}
	t.Logf("all %d threads: CapEff/CapPrm/CapBnd %#x (SYS_PTRACE, DAC_READ_SEARCH, SYSLOG, CHECKPOINT_RESTORE), NoNewPrivs 1", len(tasks), uint64(want))
}

// TestSecondAgent: a second agent on the same --data-dir is refused with a
// message naming the first; one with its own data dir runs (as `scorch
// record` next to an agent does: each has its own BPF objects).
func TestSecondAgent(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	first := startAgent(t, "--data-dir", dir)
	cmd := exec.Command(scorchBin, "agent", "--listen", "", "--data-dir", dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("second agent on the same data dir exited 0:\n%s", out)
	}
	if !strings.Contains(string(out), "another scorch agent") || !strings.Contains(string(out), fmt.Sprint(first.pid)) {
		t.Errorf("second agent's message does not name the first (pid %d):\n%s", first.pid, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(out)))
	other := startAgent(t, "--data-dir", t.TempDir())
	if !first.alive() || !other.alive() {
		t.Fatal("agents with separate data dirs should both run")
	}
	if err := other.stop(); err != nil {
		t.Fatal(err)
	}
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	// After the first exits the lock is free again.
	again := startAgent(t, "--data-dir", dir)
	again.stop()
}
