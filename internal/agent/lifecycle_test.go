package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartTime(t *testing.T) {
	dir := t.TempDir()
	write := func(pid, stat string) {
		os.MkdirAll(filepath.Join(dir, pid), 0o755)
		os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(stat), 0o644)
	}
	// A comm with spaces and parentheses: fields resume after the last ')'.
	write("42", "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 123456 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n")
	write("43", "43 (x) S 1 2\n")
	write("44", "garbage")
	if got := startTime(dir, 42); got != 123456 {
		t.Errorf("startTime(42) = %d, want 123456", got)
	}
	for _, pid := range []uint32{43, 44, 45} {
		if got := startTime(dir, pid); got != 0 {
			t.Errorf("startTime(%d) = %d, want 0 for a short, malformed or missing stat", pid, got)
		}
	}
	if got := startTime("/proc", uint32(os.Getpid())); got == 0 {
		t.Error("startTime of this process is 0")
	}
}

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
