package process

import (
	"fmt"
	"os"
	"path/filepath"
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
	if got := StartTime(filepath.Join(dir, "42")); got != 123456 {
		t.Errorf("StartTime(42) = %d, want 123456", got)
	}
	for _, pid := range []string{"43", "44", "45"} {
		if got := StartTime(filepath.Join(dir, pid)); got != 0 {
			t.Errorf("StartTime(%s) = %d, want 0 for a short, malformed or missing stat", pid, got)
		}
	}
	if got := StartTime(fmt.Sprintf("/proc/%d", os.Getpid())); got == 0 {
		t.Error("StartTime of this process is 0")
	}
}
