package sampler

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/scorch-profiler/scorch/bpf"
)

// Filter says which samples the BPF program records. It runs in the
// kernel, before any stack is taken: samples it rejects cost a map lookup
// or two and never reach user space. They are counted in Stats.Filtered
// (outside the include sets) and Stats.Excluded (in an exclude set).
//
// A sample is recorded when
//
//   - both include sets are empty, or its process is in IncludePids, or
//     its task's cgroup is in IncludeCgroups; and
//   - its process is not in ExcludePids and its cgroup not in
//     ExcludeCgroups.
//
// Pids are thread group ids (what user space calls the pid) in the
// initial PID namespace, as bpf_get_current_pid_tgid reports them and as
// the host's /proc lists them, whatever PID namespace the process runs in.
//
// Cgroups are cgroup v2 ids, as bpf_get_current_cgroup_id returns them and
// container.CgroupID reads them (the inode of the cgroup's directory under
// the cgroup2 mount). Only the cgroup the sampled thread is in is looked
// up, not its ancestors: to cover a subtree, list every cgroup in it (a
// cgroup created later is not covered until the filter is set again). That
// keeps the cost at one lookup per sample, and it is what a caller that
// matches cgroup paths against patterns needs anyway, since a pattern that
// matches a parent's path need not match a child's. The idle task (pid 0)
// is in no cgroup as far as the filter goes.
//
// The kernel forgets a process's pid entry when the process exits (its pid
// may be reused), and its ExcludePids entry when it calls exec (what it
// runs changed); the next SetFilter decides again.
type Filter struct {
	IncludePids    []uint32
	IncludeCgroups []uint64
	ExcludePids    []uint32
	ExcludeCgroups []uint64
}

// MaxFilterPids and MaxFilterCgroups bound the distinct pids and cgroups a
// Filter may name (the sizes of the pid_filter and cgroup_filter maps).
const (
	MaxFilterPids    = 16384
	MaxFilterCgroups = 16384
)

// Empty says whether f records everything.
func (f Filter) Empty() bool {
	return len(f.IncludePids) == 0 && len(f.IncludeCgroups) == 0 && len(f.ExcludePids) == 0 && len(f.ExcludeCgroups) == 0
}

const (
	filterInclude = uint8(bpf.ScorchFilterFlagFILTER_INCLUDE)
	filterExclude = uint8(bpf.ScorchFilterFlagFILTER_EXCLUDE)
)

// entries turns f into the contents of pid_filter and cgroup_filter.
func (f Filter) entries() (pids map[uint32]uint8, cgroups map[uint64]uint8, err error) {
	pids = map[uint32]uint8{}
	cgroups = map[uint64]uint8{}
	for _, p := range f.IncludePids {
		pids[p] |= filterInclude
	}
	for _, p := range f.ExcludePids {
		pids[p] |= filterExclude
	}
	for _, c := range f.IncludeCgroups {
		cgroups[c] |= filterInclude
	}
	for _, c := range f.ExcludeCgroups {
		cgroups[c] |= filterExclude
	}
	if len(pids) > MaxFilterPids {
		return nil, nil, fmt.Errorf("filter names %d processes, at most %d fit", len(pids), MaxFilterPids)
	}
	if len(cgroups) > MaxFilterCgroups {
		return nil, nil, fmt.Errorf("filter names %d cgroups, at most %d fit", len(cgroups), MaxFilterCgroups)
	}
	return pids, cgroups, nil
}

// SetFilter replaces the filter the program applies (Options.Filter at
// first). It may be called at any time, also concurrently with Drain; the
// new filter applies to samples taken once it returns. Samples taken while
// it runs see either filter, or a mix of both.
func (s *Sampler) SetFilter(f Filter) error {
	pids, cgroups, err := f.entries()
	if err != nil {
		return err
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if s.closed {
		return errors.New("sampler closed")
	}
	// New entries first, then the switches, then stale entries out: an
	// include set never runs empty on the way from one filter to the next.
	if err := putEntries(s.objs.PidFilter, pids); err != nil {
		return fmt.Errorf("set pid filter: %w", err)
	}
	if err := putEntries(s.objs.CgroupFilter, cgroups); err != nil {
		return fmt.Errorf("set cgroup filter: %w", err)
	}
	var cfg bpf.ScorchScorchConfig
	if err := s.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg.FilterInclude = b2u(len(f.IncludePids) > 0 || len(f.IncludeCgroups) > 0)
	cfg.FilterPids = b2u(len(pids) > 0)
	cfg.FilterCgroups = b2u(len(cgroups) > 0)
	if err := s.objs.Config.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := deleteStale(s.objs.PidFilter, pids); err != nil {
		return fmt.Errorf("set pid filter: %w", err)
	}
	if err := deleteStale(s.objs.CgroupFilter, cgroups); err != nil {
		return fmt.Errorf("set cgroup filter: %w", err)
	}
	return nil
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// putEntries writes every entry of want whose value in m differs.
func putEntries[K uint32 | uint64](m *ebpf.Map, want map[K]uint8) error {
	for k, v := range want {
		var cur uint8
		if err := m.Lookup(k, &cur); err == nil && cur == v {
			continue
		}
		if err := m.Put(k, v); err != nil {
			return fmt.Errorf("put %d: %w", k, err)
		}
	}
	return nil
}

// deleteStale deletes the keys of m that want does not hold. Keys are
// collected first: the kernel may delete entries meanwhile (exit hook).
func deleteStale[K uint32 | uint64](m *ebpf.Map, want map[K]uint8) error {
	var (
		k     K
		v     uint8
		stale []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list entries: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %d: %w", k, err)
		}
	}
	return nil
}
