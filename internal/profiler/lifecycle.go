package profiler

import (
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// The profiler is the one owner of which processes have state: the
// symbolizer's mappings and open files, the kernel's list of a process's
// mappings kept after it exits (sampler.Forget), and whatever the caller
// keeps per process (Config.OnObserve, Config.OnForget). A process is
// tracked from the moment its mappings are first read, and released in
// one place (forget) after the drain that holds its last samples, when:
//   - its exit event came (the kernel announces the exit of a process
//     sampled since its exec), or
//   - it is found gone, or its pid taken by another process, at two
//     sweeps in a row (sweepInterval apart): its exit event was lost
//     (the ring was full), never sent (exec'd and not sampled since, or
//     the thread-group leader exited before the other threads), or
//   - it had exited before it could be read at all: its samples are named
//     through the kernel's mappings, and its state goes after that drain.
// Two sweeps, so that the samples of a process that just exited are
// drained and named before its state goes.

// sweepInterval is how often tracked processes are checked for liveness.
var sweepInterval = 10 * time.Second // a variable for tests

// maxTracked bounds the tracked processes; past it, new ones are not
// tracked by start time (their exit event still releases them).
const maxTracked = 1 << 17

// tracked is the set of processes with state. Its lock is taken by the
// event reader goroutine and by Run's.
type tracked struct {
	procRoot string

	mu        sync.Mutex
	start     map[uint32]uint64 // pid -> start time (clock ticks since boot), 0 unknown
	suspects  map[uint32]bool   // found gone at the last sweep
	lastSweep time.Time
	swept     uint64 // released by sweeps
}

func newTracked(procRoot string) *tracked {
	return &tracked{procRoot: procRoot, start: map[uint32]uint64{}, suspects: map[uint32]bool{}, lastSweep: time.Now()}
}

func (t *tracked) dir(pid uint32) string {
	return filepath.Join(t.procRoot, strconv.FormatUint(uint64(pid), 10))
}

func (t *tracked) has(pid uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.start[pid]
	return ok
}

func (t *tracked) add(pid uint32, start uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.start[pid]; ok || len(t.start) < maxTracked {
		t.start[pid] = start
	}
}

func (t *tracked) remove(pid uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.start, pid)
	delete(t.suspects, pid)
}

// gone returns the processes found gone at this sweep and the last one,
// at most every sweepInterval.
func (t *tracked) gone(now time.Time) []uint32 {
	t.mu.Lock()
	if now.Sub(t.lastSweep) < sweepInterval {
		t.mu.Unlock()
		return nil
	}
	t.lastSweep = now
	pids := make(map[uint32]uint64, len(t.start))
	for pid, st := range t.start {
		pids[pid] = st
	}
	t.mu.Unlock()

	var gone []uint32
	next := map[uint32]bool{}
	for pid, st := range pids {
		cur := process.StartTime(t.dir(pid))
		if cur != 0 && (st == 0 || cur == st) {
			continue // alive, and the same process
		}
		t.mu.Lock()
		wasSuspect := t.suspects[pid]
		t.mu.Unlock()
		if wasSuspect {
			gone = append(gone, pid)
		} else {
			next[pid] = true
		}
	}
	t.mu.Lock()
	t.suspects = next
	t.swept += uint64(len(gone))
	t.mu.Unlock()
	return gone
}

// Tracked says how many processes have state now, and how many were
// released by a sweep (no exit event came) since the profiler started.
func (p *Profiler) Tracked() (processes int, swept uint64) {
	p.tracked.mu.Lock()
	defer p.tracked.mu.Unlock()
	return len(p.tracked.start), p.tracked.swept
}

// observe reads the mappings of process pid while it lives: at its first
// sample, or again (refresh) when its image changed. It does nothing for a
// tracked process unless refresh is set. ev is the event that announced
// the process, nil when it was met in a drain. A process found gone (its
// start time unreadable) gets no state here and false: there is nothing
// left to read. One whose start time came with its event is tracked even
// if it has exited since: its exit event, or the sweep, releases it.
func (p *Profiler) observe(pid uint32, refresh bool, ev *sampler.Event) bool {
	known := p.tracked.has(pid)
	if known && !refresh {
		return true
	}
	st := p.startTime(pid, ev)
	if st == 0 && !known {
		return false
	}
	var err error
	if known {
		err = p.cfg.Symbolizer.Refresh(pid)
	} else {
		err = p.cfg.Symbolizer.Observe(pid)
	}
	if err != nil {
		p.log.Debug("read process", "pid", pid, "err", err)
	}
	p.tracked.add(pid, st)
	if p.cfg.OnObserve != nil {
		o := Observed{Pid: pid, Changed: known && err == nil}
		if ev != nil {
			o.Comm, o.CgroupID = ev.Comm, ev.CgroupID
		}
		p.cfg.OnObserve(o)
	}
	return true
}

// startTime is the start time of process pid (0 if it is gone): the one
// its event carries when there is one and the kernel's start times agree
// with /proc's, else read from /proc/PID/stat. The first event's is
// checked against /proc's.
func (p *Profiler) startTime(pid uint32, ev *sampler.Event) uint64 {
	if ev == nil || ev.StartTime == 0 || p.kernelStarts < 0 {
		return process.StartTime(p.tracked.dir(pid))
	}
	if p.kernelStarts == 0 {
		st := process.StartTime(p.tracked.dir(pid))
		if st == 0 {
			return 0 // gone: check at the next event
		}
		if st != ev.StartTime {
			p.kernelStarts = -1
			p.log.Info("process start times of the kernel differ from /proc's (is /proc in another time namespace?): reading /proc for each new process",
				"pid", pid, "kernel", ev.StartTime, "proc", st)
			return st
		}
		p.kernelStarts = 1
	}
	return ev.StartTime
}

// forget releases everything kept of process pid.
func (p *Profiler) forget(pid uint32) {
	p.cfg.Symbolizer.Forget(pid)
	p.sampler.Forget(pid)
	p.tracked.remove(pid)
	if p.cfg.OnForget != nil {
		p.cfg.OnForget(pid)
	}
}
