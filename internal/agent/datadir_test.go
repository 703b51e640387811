package agent

import (
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
	tg := newTargets(&cfg, t.TempDir()).lookup(4242, "shortlived")
	if got := tg.labels["service_name"]; got != "shortlived" {
		t.Errorf("service_name %q, want the comm", got)
	}
}
