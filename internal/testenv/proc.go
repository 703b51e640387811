package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CPUTime is the CPU time the main thread of process pid has run so far,
// from /proc/PID/schedstat (nanoseconds on a CPU, as the scheduler counts
// them: finer than the clock ticks of /proc/PID/stat).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("process %d: empty schedstat", pid)
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("process %d: schedstat %q: %v", pid, b, err)
	}
	return time.Duration(ns), nil
}

// CPUSeconds is CPUTime in seconds; the test fails if it cannot be read.
func CPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	d, err := CPUTime(pid)
	if err != nil {
		t.Fatalf("CPU time of process %d: %v", pid, err)
	}
	return d.Seconds()
}
