package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	proc "github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// processes is the profiler's view of the symbolizer, extended so that
// everything the agent keeps per process follows the same lifecycle: a
// process observed by the symbolizer also gets its target resolved while
// it is alive (a process that lives 50 ms is gone by the next drain), and a
// forgotten one leaves the target cache too.
//
// It also keeps the list of observed processes with their start times and
// sweeps it every sweepInterval: a process that is gone (or whose pid now
// belongs to another process) for two sweeps in a row is forgotten. This
// releases the state of processes whose exit notification never came: the
// event ring was full, or the thread-group leader exited before the other
// threads. Two sweeps, so that the samples of a process that just exited
// are drained and named before its state goes.
type processes struct {
	sym      *symbolizer.Symbolizer
	targets  *targets
	procRoot string

	mu        sync.Mutex
	observed  map[uint32]uint64 // pid -> start time (clock ticks since boot), 0 unknown
	suspects  map[uint32]bool   // found gone at the last sweep
	lastSweep time.Time
	swept     uint64 // processes released by sweeps
}

const sweepInterval = 10 * time.Second

// maxObserved bounds the observed list; past it the oldest knowledge is
// not tracked (the symbolizer's own bound applies).
const maxObserved = 1 << 17

func newProcesses(sym *symbolizer.Symbolizer, t *targets, procRoot string) *processes {
	return &processes{sym: sym, targets: t, procRoot: procRoot,
		observed: map[uint32]uint64{}, suspects: map[uint32]bool{}, lastSweep: time.Now()}
}

// Observe implements profiler.Symbolizer. A process that is already gone
// gets no state: there is nothing left to read, and state created now
// would outlive it (the profiler re-observes a process that exec'd after
// the drain, when it may have exited too).
func (p *processes) Observe(pid uint32) error {
	p.mu.Lock()
	_, known := p.observed[pid]
	p.mu.Unlock()
	if known {
		return p.sym.Observe(pid) // a no-op when the symbolizer has it
	}
	st := startTime(p.procRoot, pid)
	if st == 0 {
		return fmt.Errorf("pid %d: %w", pid, errGone)
	}
	err := p.sym.Observe(pid)
	p.targets.prewarm(pid)
	p.mu.Lock()
	if len(p.observed) < maxObserved {
		p.observed[pid] = st
	}
	p.mu.Unlock()
	return err
}

var errGone = errors.New("process exited")

// Refresh implements profiler.Symbolizer: the process's image changed
// (exec) or was being replaced when it was observed, so its mappings and
// its target (executable, name) are read again while it is alive.
func (p *processes) Refresh(pid uint32) error {
	p.mu.Lock()
	_, known := p.observed[pid]
	p.mu.Unlock()
	if !known {
		return p.Observe(pid)
	}
	err := p.sym.Refresh(pid)
	if err == nil {
		p.targets.forget(pid)
		p.targets.prewarm(pid)
	}
	return err
}

// Observed implements profiler.Symbolizer.
func (p *processes) Observed(pid uint32) bool {
	p.mu.Lock()
	_, known := p.observed[pid]
	p.mu.Unlock()
	return known || p.sym.Observed(pid)
}

// Forget implements profiler.Symbolizer.
func (p *processes) Forget(pid uint32) {
	p.sym.Forget(pid)
	p.targets.forget(pid)
	p.mu.Lock()
	delete(p.observed, pid)
	delete(p.suspects, pid)
	p.mu.Unlock()
}

// UseKernelMappings implements profiler.Symbolizer.
func (p *processes) UseKernelMappings(f func(pid uint32, addr uint64) (proc.Mapping, bool)) {
	p.sym.UseKernelMappings(f)
}

// ResolveUser and ResolveKernel implement exporter.Resolver.
func (p *processes) ResolveUser(pid uint32, addr uint64) symbolizer.Frame {
	return p.sym.ResolveUser(pid, addr)
}
func (p *processes) ResolveKernel(addr uint64) symbolizer.Frame { return p.sym.ResolveKernel(addr) }

// sweep forgets processes gone for two sweeps. It runs on the drain
// goroutine, after a batch was added, at most every sweepInterval.
func (p *processes) sweep(now time.Time) {
	p.mu.Lock()
	if now.Sub(p.lastSweep) < sweepInterval {
		p.mu.Unlock()
		return
	}
	p.lastSweep = now
	pids := make(map[uint32]uint64, len(p.observed))
	for pid, st := range p.observed {
		pids[pid] = st
	}
	p.mu.Unlock()

	var gone []uint32
	next := map[uint32]bool{}
	for pid, st := range pids {
		cur := startTime(p.procRoot, pid)
		if cur != 0 && (st == 0 || cur == st) {
			continue // alive, and the same process
		}
		p.mu.Lock()
		wasSuspect := p.suspects[pid]
		p.mu.Unlock()
		if wasSuspect {
			gone = append(gone, pid)
		} else {
			next[pid] = true
		}
	}
	for _, pid := range gone {
		p.Forget(pid)
	}
	p.mu.Lock()
	p.suspects = next
	p.swept += uint64(len(gone))
	p.mu.Unlock()
}

func (p *processes) stats() (observed int, swept uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.observed), p.swept
}

// startTime reads field 22 of /proc/PID/stat, the process's start time in
// clock ticks since boot; 0 if the process is gone or the file malformed.
func startTime(procRoot string, pid uint32) uint64 {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "stat"))
	if err != nil {
		return 0
	}
	// comm (field 2) is in parentheses and may hold anything: fields
	// resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// dataDirLock holds an exclusive lock on DIR/scorch.lock for the agent's
// life: two agents writing one store would delete each other's windows
// through retention and write every window twice. The lock is released by
// the kernel when the process ends, so a crash leaves nothing stale.
type dataDirLock struct{ f *os.File }

func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "scorch.lock")
	// Held open read-only: a descriptor open for writing would keep the
	// file system from being remounted read-only under us.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if errors.Is(err, unix.EROFS) || errors.Is(err, fs.ErrPermission) {
		// A read-only data dir: the store reports its own errors.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another scorch agent (pid %s) is using --data-dir %s; stop it or give this one another --data-dir",
				bytes.TrimSpace(holder), dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The holder's pid, for the message above (best effort).
	os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	return &dataDirLock{f: f}, nil
}

func (l *dataDirLock) release() {
	if l != nil && l.f != nil {
		l.f.Close()
	}
}
