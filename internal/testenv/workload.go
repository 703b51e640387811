package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// workloadTools are the commands testdata/Makefile runs; when make fails,
// the missing ones are named with their packages.
var workloadTools = []string{"make", "cc", "c++", "cargo", "objcopy", "nm", "xz"}

var built sync.Map // name -> *buildResult

type buildResult struct {
	once sync.Once
	err  error
}

// Workload returns the absolute path of testdata/bin/NAME, brought up to
// date with make (testdata/Makefile) once per test binary. Builds are
// serialized across test processes (go test runs packages in parallel) by
// a lock on testdata/bin/.lock.
func Workload(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(Root(t), "testdata")
	bin := filepath.Join(dir, "bin", name)
	v, _ := built.LoadOrStore(name, new(buildResult))
	r := v.(*buildResult)
	r.once.Do(func() { r.err = build(dir, bin) })
	if r.err != nil {
		for _, tool := range workloadTools {
			RequireTool(t, tool)
		}
		t.Fatalf("building workload %s: %v", name, r.err)
	}
	return bin
}

func build(dir, bin string) error {
	if _, err := exec.LookPath("make"); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return err
	}
	// The lock is best effort: a user who cannot create it (testdata/bin
	// built by root) cannot build either, and make says so.
	if lock, err := os.OpenFile(filepath.Join(filepath.Dir(bin), ".lock"), os.O_CREATE|os.O_RDONLY, 0o644); err == nil {
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return fmt.Errorf("locking %s: %w", lock.Name(), err)
		}
		defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	}
	if out, err := exec.Command("make", "-C", dir, bin).CombinedOutput(); err != nil {
		return fmt.Errorf("make -C %s %s: %v\n%s", dir, bin, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("make -C %s %s made no file: %w", dir, bin, err)
	}
	return nil
}

// StartWorkload runs testdata/bin/NAME with args until the test ends (its
// cleanup kills and reaps it).
func StartWorkload(t testing.TB, name string, args ...string) *exec.Cmd {
	t.Helper()
	return Start(t, Workload(t, name), args...)
}

// Start runs the program at path with args until the test ends (its
// cleanup kills and reaps it).
func Start(t testing.TB, path string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}
