package agent

import (
	"os"
	"strings"
	"testing"
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
