package main

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// profilerNice is the nice value record and agent give their threads. The
// unwind tables of a program started after the profiler are built while it
// runs; on a host whose CPUs are all busy, a profiler at the default
// priority waits tens of milliseconds for a CPU, and the new program's
// first samples are walked without its table meanwhile. The work itself
// is small (a table once per binary), so a slightly higher priority costs
// the workloads little and shortens that window.
const profilerNice = -5

// raisePriority sets every thread of this process to profilerNice (nice is
// per thread; threads created later inherit their creator's). Best effort:
// without CAP_SYS_NICE it stays as it was.
func raisePriority() {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		_ = unix.Setpriority(unix.PRIO_PROCESS, tid, profilerNice)
	}
}
