package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestRecordNamespacedProcess records, with --pid and its host pid, a
// process that is pid 1 of a PID namespace of its own and runs from a
// tmpfs mounted only in its own mount namespace: the host cannot open the
// binary by its path, yet every frame is named (through /proc/PID).
func TestRecordNamespacedProcess(t *testing.T) {
	requireRoot(t)
	testenv.RequireTool(t, "unshare")
	src := testenv.Workload(t, "cpuburn-c")
	dir := t.TempDir()
	name := fmt.Sprintf("burn-ns-%d", os.Getpid())
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
		"sh", "-c", `mount -t tmpfs scorch-test "$1" && cp "$2" "$1/$3" && exec "$1/$3"`, "sh", dir, src, name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The namespace's pid 1 is unshare's only child.
	pid := 0
	u := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("workload did not start in its namespaces; unshare said: %s", stderr.String())
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", u, u))
		f := strings.Fields(string(b))
		if len(f) != 1 {
			continue
		}
		p, _ := strconv.Atoi(f[0])
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); exe == filepath.Join(dir, name) {
			pid = p
		}
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the host sees the hidden binary (%v): the test would prove nothing", err)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), fmt.Sprintf("\nNSpid:\t%d\t1\n", pid)) {
		t.Fatalf("pid %d is not pid 1 of a namespace of its own:\n%s", pid, status)
	}
	time.Sleep(200 * time.Millisecond) // let it reach its hot loop

	p, _, _ := record(t, "--pid", strconv.Itoa(pid), "--duration", "5s", "--frequency", "499")
	for _, s := range p.Sample {
		if got := s.NumLabel["pid"]; len(got) != 1 || got[0] != int64(pid) {
			t.Fatalf("a sample of pid %v in a profile of --pid %d", got, pid)
		}
	}
	checkSplit(t, p, pid, "hot_a", "hot_b", "main", "")
	found := false
	for _, m := range p.Mapping {
		if strings.HasSuffix(m.File, "/"+name) {
			found = true
			if m.BuildID == "" || !m.HasFunctions {
				t.Errorf("mapping %+v of the hidden binary: no build id or no functions", m)
			}
		}
	}
	if !found {
		t.Errorf("no mapping for the hidden binary %s", name)
	}
}
