package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// In-kernel filtering of --include/--exclude.
//
// The rules match regular expressions against a process's executable,
// name, cgroup path and pid. The BPF program can only compare pids and
// cgroup ids, so the rules are turned into a sampler.Filter by scanning
// the host: every process under the proc root, and the cgroup v2 tree
// under the cgroup2 mount. Agent.Run computes the filter before sampling
// starts, and a filterLoop recomputes it:
//
//   - when a process the rules leave out is seen: the program announces a
//     process on its first recorded sample (and again after an exec), the
//     loop checks that process against the rules at once and, if they
//     exclude it, scans again (at most one scan every filterMinGap, so a
//     burst of new processes costs one scan);
//   - when a process the filter excludes by pid calls exec (the kernel
//     drops its entry; a scan that read the process just before the exec
//     would otherwise leave an entry for a program the rules may want);
//   - when a drain brings samples the rules exclude of a process the filter
//     does not list: what no event announces (kernel threads: the program
//     announces user processes only) is filtered from the next drain on;
//   - every filterPeriod, for what no event tells (a process renamed or
//     moved to another cgroup, a cgroup created).
//
// The samples a process has before the scan that excludes it (the first of
// a new process, or those of a process that changed since the last scan)
// still reach user space, where targets applies the very same rules, so the
// result is the same as without the kernel filter, only cheaper.
//
// What goes into the kernel:
//
//   - A cgroup is excluded when the rules decide by its path alone: an
//     --exclude cgroup: rule matches its path, or every --include rule is a
//     cgroup: rule and none matches. Every such cgroup of the tree is
//     listed (the program looks up a task's own cgroup only, see
//     sampler.Filter), so a rule that matches a parent but not a child
//     keeps its exact meaning.
//   - A process is excluded when the rules exclude it (by exe, comm, pid or
//     cgroup, as targets does) and its cgroup is not excluded already.
//     exe: and comm: rules can only be applied to processes the scan
//     found: they are resolved to pids.
//   - When every --include rule is a pid: rule, the include set is those
//     pids: everything else is left out without being listed.
//
// Include sets are never derived from scans (but for pid: rules, which name
// pids exactly): a process or cgroup born after a scan would be left out
// until the next one, losing samples the rules want.
const (
	filterPeriod = 10 * time.Second
	// filterMinGap is the least time between two scans. A new process the
	// rules exclude is filtered in the kernel within filterMinGap and one
	// scan of its first sample.
	filterMinGap = 500 * time.Millisecond
)

// maxCgroupWalk bounds the cgroup directories one scan visits.
const maxCgroupWalk = 1 << 17

// filterScan is what one scan found, for logs and metrics.
type filterScan struct {
	Procs, Cgroups int // processes and cgroups looked at
	Truncated      bool
}

// kernelFilter computes the in-kernel filter for the rules from procRoot
// (the host's /proc) and cgroupRoot (the cgroup2 mount; "" to filter by
// pid only). It returns an empty filter when there are no rules.
func kernelFilter(include, exclude []Rule, procRoot, cgroupRoot string) (sampler.Filter, filterScan, error) {
	var (
		f    sampler.Filter
		scan filterScan
	)
	if len(include) == 0 && len(exclude) == 0 {
		return f, scan, nil
	}
	need := map[string]bool{}
	pidOnly, cgroupOnly := len(include) > 0, len(include) > 0
	for _, r := range include {
		need[r.Field] = true
		pidOnly = pidOnly && r.Field == "pid"
		cgroupOnly = cgroupOnly && r.Field == "cgroup"
	}
	cgroupExclude := false
	for _, r := range exclude {
		need[r.Field] = true
		cgroupExclude = cgroupExclude || r.Field == "cgroup"
	}
	var included map[uint32]bool
	if pidOnly {
		included = map[uint32]bool{}
		for _, r := range include {
			if pid, ok := rulePid(r); ok {
				f.IncludePids = append(f.IncludePids, pid)
				included[pid] = true
			}
		}
	}

	// Cgroups the rules exclude by their path alone.
	excludedPaths := map[string]bool{}
	if cgroupRoot != "" && (cgroupExclude || cgroupOnly) {
		cgExcluded := func(path string) bool {
			fields := map[string]string{"cgroup": path}
			if matchAny(cgroupRules(exclude), fields) {
				return true
			}
			return cgroupOnly && !matchAny(include, fields)
		}
		n, truncated, err := walkCgroups(cgroupRoot, func(path string, id uint64) {
			if cgExcluded(path) {
				excludedPaths[path] = true
				f.ExcludeCgroups = append(f.ExcludeCgroups, id)
			}
		})
		scan.Cgroups, scan.Truncated = n, truncated
		if err != nil {
			return sampler.Filter{}, scan, err
		}
	}

	// Processes the rules exclude.
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return sampler.Filter{}, scan, err
	}
	for _, e := range ents {
		pid64, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || pid64 == 0 {
			continue
		}
		pid := uint32(pid64)
		scan.Procs++
		if pidOnly && !included[pid] {
			continue // left out by the include set already
		}
		fields, ok := procFields(procRoot, pid, need)
		if !ok {
			continue // gone
		}
		if excludedPaths[fields["cgroup"]] {
			continue
		}
		if rulesExclude(include, exclude, fields) {
			f.ExcludePids = append(f.ExcludePids, pid)
		}
	}
	if len(f.ExcludePids) > sampler.MaxFilterPids {
		// The rest is left to user space.
		sort.Slice(f.ExcludePids, func(i, j int) bool { return f.ExcludePids[i] < f.ExcludePids[j] })
		f.ExcludePids, scan.Truncated = f.ExcludePids[:sampler.MaxFilterPids], true
	}
	if len(f.ExcludeCgroups) > sampler.MaxFilterCgroups {
		f.ExcludeCgroups, scan.Truncated = f.ExcludeCgroups[:sampler.MaxFilterCgroups], true
	}
	if len(f.IncludePids) > sampler.MaxFilterPids {
		// Cannot happen with flags, but a config file could: filter
		// nothing in the kernel rather than too much.
		return sampler.Filter{}, scan, errors.New("too many pid: include rules for the in-kernel filter")
	}
	return f, scan, nil
}

// rulesExclude says whether the rules leave out a process with these
// fields, as targets decides.
func rulesExclude(include, exclude []Rule, fields map[string]string) bool {
	return (len(include) > 0 && !matchAny(include, fields)) || matchAny(exclude, fields)
}

// rulePid returns the pid a pid: rule names (parseRule makes them ^N$).
func rulePid(r Rule) (uint32, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(r.Re.String(), "^"), "$")
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

func cgroupRules(rules []Rule) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Field == "cgroup" {
			out = append(out, r)
		}
	}
	return out
}

// procFields reads the fields the rules need of a process, as targets
// does: the executable's path, the process name, the cgroup v2 path.
func procFields(procRoot string, pid uint32, need map[string]bool) (map[string]string, bool) {
	ps := strconv.FormatUint(uint64(pid), 10)
	dir := filepath.Join(procRoot, ps)
	fields := map[string]string{"pid": ps}
	if need["comm"] {
		b, err := process.ReadProcFile(filepath.Join(dir, "comm"), 0)
		if err != nil {
			return nil, false
		}
		fields["comm"] = strings.TrimSuffix(string(b), "\n")
	}
	if need["exe"] {
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil && errors.Is(err, fs.ErrNotExist) {
			if _, serr := os.Stat(dir); serr != nil {
				return nil, false
			}
		}
		fields["exe"] = strings.TrimSuffix(exe, " (deleted)") // "" for kernel threads
	}
	if need["cgroup"] {
		info, err := container.Lookup(procRoot, pid)
		if err != nil {
			return nil, false
		}
		fields["cgroup"] = info.Path
	}
	return fields, true
}

// walkCgroups calls fn with the path (relative to root, "/" for root
// itself, as /proc/PID/cgroup spells it) and id of every cgroup under
// root, a cgroup2 mount. It stops after maxCgroupWalk directories.
func walkCgroups(root string, fn func(path string, id uint64)) (n int, truncated bool, err error) {
	if _, err := container.CgroupID(root); err != nil {
		return 0, false, err // not cgroup2: ids would not be the kernel's
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // removed meanwhile, or unreadable: skip
		}
		if !d.IsDir() {
			return nil
		}
		if n >= maxCgroupWalk {
			truncated = true
			return filepath.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		path := "/"
		if rel != "." {
			path = "/" + filepath.ToSlash(rel)
		}
		n++
		fn(path, st.Ino)
		return nil
	})
	return n, truncated, err
}

// filterLoop keeps the sampler's in-kernel filter in step with the rules
// (see above). Agent.Run starts run on a goroutine of its own and waits for
// it; onEvent runs on the profiler's event reader goroutine.
type filterLoop struct {
	include, exclude []Rule
	procRoot         string
	cgroupRoot       string // "": no cgroup2 mount, cgroup rules resolve to pids
	need             map[string]bool
	log              *slog.Logger
	// set installs a filter; assigned before run starts.
	set  func(sampler.Filter) error
	wake chan struct{} // a scan is wanted; never blocks a sender

	mu       sync.Mutex
	excluded map[uint32]bool // ExcludePids of the filter last set
	asked    map[uint32]bool // sawExcluded asked for a scan this filterPeriod
	warned   bool            // a failure or truncation was logged
}

// maxAsked bounds filterLoop.asked.
const maxAsked = 1 << 14

// newFilterLoop returns the loop for the rules, or nil when there are none
// (nothing to filter: the program records every process).
func newFilterLoop(include, exclude []Rule, procRoot string, log *slog.Logger) *filterLoop {
	if len(include) == 0 && len(exclude) == 0 {
		return nil
	}
	l := &filterLoop{include: include, exclude: exclude, procRoot: procRoot, log: log,
		need: map[string]bool{}, wake: make(chan struct{}, 1), asked: map[uint32]bool{}}
	for _, r := range append(append([]Rule(nil), include...), exclude...) {
		l.need[r.Field] = true
	}
	mnt, err := container.Cgroup2Mount(procRoot)
	if err != nil {
		log.Info("no cgroup2 mount: cgroup rules are applied to processes only", "err", err)
		mnt = ""
	}
	l.cgroupRoot = mnt
	return l
}

// compute scans the host for the filter the rules want. On failure it
// logs (once) and returns an empty filter: the rules still apply in user
// space.
func (l *filterLoop) compute() (sampler.Filter, bool) {
	f, scan, err := kernelFilter(l.include, l.exclude, l.procRoot, l.cgroupRoot)
	if err != nil {
		l.warnOnce("in-kernel filter not computed; rules still apply in user space", "err", err)
		return sampler.Filter{}, false
	}
	if scan.Truncated {
		l.warnOnce("in-kernel filter truncated; the rest is filtered in user space", "procs", scan.Procs, "cgroups", scan.Cgroups)
	}
	l.log.Debug("in-kernel filter", "include_pids", len(f.IncludePids), "exclude_pids", len(f.ExcludePids),
		"exclude_cgroups", len(f.ExcludeCgroups), "procs_scanned", scan.Procs, "cgroups_scanned", scan.Cgroups)
	return f, true
}

func (l *filterLoop) warnOnce(msg string, args ...any) {
	l.mu.Lock()
	first := !l.warned
	l.warned = true
	l.mu.Unlock()
	if first {
		l.log.Warn(msg, args...)
	}
}

// installed records the filter the kernel now applies.
func (l *filterLoop) installed(f sampler.Filter) {
	m := make(map[uint32]bool, len(f.ExcludePids))
	for _, p := range f.ExcludePids {
		m[p] = true
	}
	l.mu.Lock()
	l.excluded = m
	l.mu.Unlock()
}

// onEvent asks for a scan when a process the rules exclude was sampled, or
// when a process the filter lists by pid calls exec. It never blocks.
func (l *filterLoop) onEvent(ev sampler.Event) {
	switch ev.Type {
	case sampler.EventNewPid:
		fields, ok := procFields(l.procRoot, ev.Pid, l.need)
		if !ok || !rulesExclude(l.include, l.exclude, fields) {
			return
		}
	case sampler.EventExec:
		l.mu.Lock()
		listed := l.excluded[ev.Pid]
		l.mu.Unlock()
		if !listed {
			return
		}
	default:
		return
	}
	l.request()
}

// sawExcluded is told of a sample user space dropped by the rules: when its
// process is not listed by pid, the kernel's filter does not know it yet (a
// kernel thread, which the program does not announce; a process whose
// announcement was lost, or that changed since the last scan), so a scan is
// asked for, once per process per filterPeriod: a process the scan does not
// list after all (it exited; user space judged it by the comm of another
// of its threads) must not cause a scan at every drain. The idle task is
// never listed: user space drops it. It never blocks.
func (l *filterLoop) sawExcluded(pid uint32) {
	if pid == 0 {
		return
	}
	l.mu.Lock()
	ask := !l.excluded[pid] && !l.asked[pid]
	if ask {
		if len(l.asked) >= maxAsked {
			clear(l.asked)
		}
		l.asked[pid] = true
	}
	l.mu.Unlock()
	if ask {
		l.request()
	}
}

// request asks run for a scan.
func (l *filterLoop) request() {
	select {
	case l.wake <- struct{}{}:
	default: // a scan is pending already
	}
}

// run recomputes and installs the filter on request (onEvent), at most
// every filterMinGap, and every filterPeriod, until ctx ends. The filter
// computed before sampling started is installed already.
func (l *filterLoop) run(ctx context.Context) {
	timer := time.NewTimer(filterPeriod)
	defer timer.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			l.mu.Lock()
			clear(l.asked)
			l.mu.Unlock()
		case <-l.wake:
			if d := filterMinGap - time.Since(last); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
		select {
		case <-l.wake: // this scan serves the requests made so far
		default:
		}
		last = time.Now()
		if f, ok := l.compute(); ok {
			if err := l.set(f); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.warnOnce("in-kernel filter not updated; rules still apply in user space", "err", err)
			} else {
				l.installed(f)
			}
		}
		timer.Reset(filterPeriod)
	}
}
