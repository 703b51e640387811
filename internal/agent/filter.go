package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// In-kernel filtering of --include/--exclude.
//
// The rules match regular expressions against a process's executable,
// name, cgroup path and pid. The BPF program can only compare pids and
// cgroup ids, so the rules are turned into a sampler.Filter by scanning
// the host: every process under the proc root, and the cgroup v2 tree
// under the cgroup2 mount. The agent recomputes the filter every
// filterPeriod; the samples of a process the last scan did not see (one
// that started since, or that moved, or exec'd) still reach user space,
// where targets applies the very same rules, so the result is the same as
// without the kernel filter, only cheaper.
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
//     exe: and comm: rules can only be applied to processes the scan found:
//     they are resolved to pids.
//   - When every --include rule is a pid: rule, the include set is those
//     pids: everything else is left out without being listed.
//
// Include sets are never derived from scans (but for pid: rules, which name
// pids exactly): a process or cgroup born after a scan would be left out
// until the next one, losing samples the rules want.
//
//lint:ignore U1000 wired by the filter change
const filterPeriod = 10 * time.Second

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
		if (len(include) > 0 && !matchAny(include, fields)) || matchAny(exclude, fields) {
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
		b, err := os.ReadFile(filepath.Join(dir, "comm"))
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

// runFilter keeps the sampler's in-kernel filter in step with the rules
// (see above): it computes it at once and then every filterPeriod, and
// passes it to set, until ctx ends. It returns at once when there are no
// rules.
//
//lint:ignore U1000 wired by the filter change
func (a *Agent) runFilter(ctx context.Context, set func(sampler.Filter) error) {
	if len(a.cfg.Include) == 0 && len(a.cfg.Exclude) == 0 {
		return
	}
	procRoot := a.targets.procRoot
	cgroupRoot, err := container.Cgroup2Mount(procRoot)
	if err != nil {
		a.log.Info("no cgroup2 mount: cgroup rules are applied in user space only", "err", err)
		cgroupRoot = ""
	}
	warned := false
	t := time.NewTicker(filterPeriod)
	defer t.Stop()
	for {
		f, scan, err := kernelFilter(a.cfg.Include, a.cfg.Exclude, procRoot, cgroupRoot)
		if err == nil {
			err = set(f)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !warned:
			a.log.Warn("in-kernel filter not updated; rules still apply in user space", "err", err)
			warned = true
		case err == nil:
			if scan.Truncated && !warned {
				a.log.Warn("in-kernel filter truncated; the rest is filtered in user space", "procs", scan.Procs, "cgroups", scan.Cgroups)
				warned = true
			}
			a.log.Debug("in-kernel filter", "include_pids", len(f.IncludePids), "exclude_pids", len(f.ExcludePids),
				"exclude_cgroups", len(f.ExcludeCgroups), "procs_scanned", scan.Procs, "cgroups_scanned", scan.Cgroups)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
