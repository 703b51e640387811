package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDataDirLock: a second agent on the same data dir is refused with a
// message naming the holder; after the first releases it, it is free.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	l1, err := lockDataDir(dir)
	if err != nil || l1 == nil {
		t.Fatalf("first lock: %v", err)
	}
	_, err = lockDataDir(dir)
	if err == nil || !strings.Contains(err.Error(), "another scorch agent") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second lock: %v, want a refusal naming the directory", err)
	}
	l1.release()
	l2, err := lockDataDir(dir)
	if err != nil || l2 == nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}

// TestTargetOfExitedProcess: a process gone before its target is built is
// named by its comm, not called "kernel".
func TestTargetOfExitedProcess(t *testing.T) {
	cfg := testConfig(t)
	tg := newTargets(&cfg, t.TempDir()).lookup(4242, "shortlived", 0)
	if got := tg.labels["service_name"]; got != "shortlived" {
		t.Errorf("service_name %q, want the comm", got)
	}
}

// TestTargetOfZombie: a process that exited and is not reaped yet (a
// zombie: its /proc directory stays, its exe link is unreadable, as a
// kernel thread's) is named by its comm; a kernel thread is "kernel".
func TestTargetOfZombie(t *testing.T) {
	cfg := testConfig(t)
	cmd := exec.Command("sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := uint32(cmd.Process.Pid)
	for !zombie(pid) {
		time.Sleep(time.Millisecond)
	}
	tgs := newTargets(&cfg, "/proc")
	if got := tgs.lookup(pid, "shortlived", 0).labels["service_name"]; got != "shortlived" {
		t.Errorf("zombie: service_name %q, want the comm", got)
	}
	if comm, _ := os.ReadFile("/proc/2/comm"); string(comm) != "kthreadd\n" {
		t.Skip("pid 2 is not kthreadd: not in the host's pid namespace")
	}
	if got := tgs.lookup(2, "kthreadd", 0).labels["service_name"]; got != "kernel" {
		t.Errorf("kthreadd: service_name %q, want kernel", got)
	}
}

func zombie(pid uint32) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// TestTargetPerService: the processes of one service share a target (the
// pid is a sample label, not a target label) unless --series-per-pid asks
// for one target per process.
func TestTargetPerService(t *testing.T) {
	self := uint32(os.Getpid())
	parent := uint32(os.Getppid())
	for _, tc := range []struct {
		flags []string
		same  bool
	}{
		{nil, true},
		{[]string{"--series-per-pid"}, false},
	} {
		cfg := testConfig(t, append(tc.flags, "--service-name", "svc=comm:.")...)
		tgs := newTargets(&cfg, "/proc")
		a, b := tgs.lookup(self, "a", 0), tgs.lookup(parent, "b", 0)
		if a.labels["service_name"] != "svc" || b.labels["service_name"] != "svc" {
			t.Fatalf("%v: services %q and %q", tc.flags, a.labels["service_name"], b.labels["service_name"])
		}
		if same := a.key == b.key; same != tc.same {
			t.Errorf("%v: two processes of one service share a target: %v, want %v (labels %v and %v)", tc.flags, same, tc.same, a.labels, b.labels)
		}
		if _, ok := a.labels["pid"]; ok == tc.same {
			t.Errorf("%v: target labels %v", tc.flags, a.labels)
		}
	}
}
