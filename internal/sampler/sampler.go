package sampler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/unwinder"
)

// Options configure a Sampler.
type Options struct {
	// Frequency is the sampling rate per CPU, in Hz (default 99).
	Frequency int
	// Pids, when not empty, restricts sampling to these processes; the
	// filter runs in the BPF program, so other samples never reach us.
	// Shorthand for (and added to) Filter.IncludePids.
	Pids []uint32
	// Filter is the filter the program starts with; SetFilter replaces it.
	Filter Filter
	// ProcRoot is where the proc file system of the initial PID namespace
	// is mounted: "/proc" (the default) unless the caller runs in a PID
	// namespace of its own with the host's /proc mounted elsewhere. The
	// program reports pids of the initial namespace; their maps and files
	// are read there.
	ProcRoot string
	// DropIdle drops samples of the idle task instead of recording them
	// as kernel-only stacks.
	DropIdle bool
	// FramePointersOnly turns unwind tables off: the sampler loads
	// ProgramFramePointers, which walks user stacks through the
	// frame-pointer chain only, so they stop at the first function built
	// without frame pointers. Kernels before 5.17 get that program
	// whatever this says. Otherwise the sampler builds a table
	// from the .eh_frame/.debug_frame of every executable file a sampled
	// process maps and the program walks those stacks with it (package
	// unwinder).
	FramePointersOnly bool
	// UnwindTableBytes bounds the kernel memory of the tables: the size of
	// the row array all tables share, 8 bytes per row (default
	// DefaultUnwindTableBytes, 16 MiB; libc needs about 190 KB). Files that
	// do not fit are unwound with frame pointers.
	UnwindTableBytes int
	// TableCacheDir, when set, keeps built unwind tables on disk there,
	// by build id, within TableCacheBytes (default DefaultTableCacheBytes),
	// so that a restarted agent builds each table once.
	TableCacheDir   string
	TableCacheBytes int64
	// StackMapEntries is the number of distinct stacks of each kind
	// (kernel, frame-pointer user, unwound user) the program can hold
	// between two drains (default: StackMapEntriesFor the online CPUs and
	// the frequency); the counts map holds twice as many keys. A stack that does not fit is counted as
	// lost by reason; the sample is kept without it.
	StackMapEntries int
	// Files is the cache of opened, parsed files the table worker shares
	// with the symbolizer, so that each mapped file is opened and parsed
	// once (nil: the sampler's own).
	Files  *process.Files
	Logger *slog.Logger
}

// StackMapEntriesFor is the default of Options.StackMapEntries for cpus
// CPUs sampled at freq Hz: room for every sample of two drain intervals
// (drains are a second apart; a late drain has a second of headroom), each
// with a distinct stack, rounded up to a power of two, at least
// minStackMapEntries. The kernel charges the maps to the caller's memory
// cgroup, about 1 KiB per entry, kind and set: for the entries in use
// where they grow (GrowingMaps), else for all of them, so that 8 CPUs at
// 999 Hz, 16384 entries, take about 100 MiB where 2 CPUs at 99 Hz, 1024,
// take about 7 MiB.
func StackMapEntriesFor(cpus, freq int) int {
	n := max(cpus, 1) * max(freq, 1) * 2
	e := minStackMapEntries
	for e < n && e < maxStackMapEntries {
		e <<= 1
	}
	return e
}

const (
	minStackMapEntries = 1024
	maxStackMapEntries = 1 << 20
)

// procEntriesFor is the number of processes unwind_procs holds (seen_pids
// twice as many) on a host of cpus CPUs: 1024 a CPU, from 4096 to 32768.
// Both are LRU maps, which the kernel preallocates: an exited process
// keeps its entry until a new one takes it, so under churn they are full
// whatever their size. At 864 bytes a process, 2 CPUs take 3.4 MiB.
func procEntriesFor(cpus int) int {
	return min(max(4096, 1024*cpus), 32768)
}

// growingMaps are the hash maps created with BPF_F_NO_PREALLOC where the
// kernel allows it, so that their memory follows their use (MapBytes).
var growingMaps = []string{
	"counts0", "counts1",
	"stacks_kern0", "stacks_kern1", "stacks_user0", "stacks_user1", "stacks_unwound0", "stacks_unwound1",
	"pid_filter", "cgroup_filter", "unwind_files",
}

// Sample is one distinct (process, thread, stacks) tuple and how many times
// it was sampled since the previous drain.
type Sample struct {
	Pid, Tid uint32
	Comm     string
	// Kernel and User are instruction addresses, leaf first. All but the
	// first address of each are return addresses.
	Kernel, User []uint64
	// KernelLost and UserLost are set when the stack of that kind was taken
	// but could not be stored (its stack map was full).
	KernelLost, UserLost bool
	// UserTruncated is set when the user stack was walked with unwind
	// tables and the walk stopped before the outermost frame (see the
	// Unwind* counters of Stats for why).
	UserTruncated bool
	// UserCallerUnknown is set when the user stack's leaf was walked by
	// frame pointer without a table: its caller may be missing (a leaf
	// without a frame record), so the stack must not name the next
	// address as the leaf's caller.
	UserCallerUnknown bool
	Count             uint64
}

// Stats are the program's counters, totals since the sampler opened.
type Stats struct {
	Samples         uint64 // program runs
	IdleDropped     uint64 // idle samples dropped on request
	Filtered        uint64 // samples outside the filter's include sets
	Excluded        uint64 // samples in the filter's exclude sets
	LostUserStack   uint64 // samples kept without their user stack
	LostKernelStack uint64 // samples kept without their kernel stack
	LostCountsFull  uint64 // samples dropped: counts map full
	LostPidEvents   uint64 // new-process notifications dropped

	// User stacks walked with unwind tables, and how many of them stopped
	// before the outermost frame, by reason.
	Unwound           uint64
	UnwindMaxFrames   uint64 // deeper than the frames the program keeps (128)
	UnwindReadFailed  uint64 // the stack memory could not be read
	UnwindBadFrame    uint64 // a frame did not move towards the callers
	UnwindNoLR        uint64 // arm64: return address in LR above the leaf
	LostUnwoundStacks uint64 // unwound stacks not stored: map full (kept as lost)

	// Unwound user stacks whose leaf had no table, so that its caller is
	// marked unknown (see Sample.UserCallerUnknown), by reason.
	CallerNoTable   uint64 // the leaf's file has no usable table
	CallerPending   uint64 // the leaf's file table was being built
	CallerNoMapping uint64 // the kernel could not say which mapping holds the leaf

	FileRequests     uint64 // files whose tables the kernel asked for
	LostFileRequests uint64 // requests not sent: ring buffer or unwind_files full

	// Samples whose user stack walk met code whose table was on the way
	// (or a mapping the sample could not learn): sent to user space to
	// finish (see TableStats for how they ended), or, when the deferred
	// ring buffer was full, kept as walked so far (cut short).
	Deferred     uint64
	LostDeferred uint64
}

// Lost is the number of samples dropped whole.
func (s Stats) Lost() uint64 { return s.LostCountsFull }

// EventType says what happened to a process.
type EventType uint32

const (
	EventNewPid = EventType(bpf.ScorchEventTypeEVENT_NEW_PID) // first sample of a process
	EventExec   = EventType(bpf.ScorchEventTypeEVENT_EXEC)    // a process called exec
	EventExit   = EventType(bpf.ScorchEventTypeEVENT_EXIT)    // a sampled process exited
)

// Event is a process lifecycle notification from the BPF programs. Besides
// the pid it carries what the kernel knew of the process when it happened,
// so that user space need not read it from /proc for each new process.
type Event struct {
	Type EventType
	Pid  uint32
	// StartTime is when the process started, in clock ticks since boot
	// (what field 22 of /proc/PID/stat says in the host's time namespace),
	// which tells it from a later process with the same pid; 0 unknown
	// (kernels before 5.5).
	StartTime uint64
	// CgroupID is the cgroup v2 id of the task the event came from (see
	// container.CgroupID).
	CgroupID uint64
	// Comm is the process's name: its thread-group leader's comm.
	Comm string
}

// userHZ is the unit of the kernel's clock_t (USER_HZ), in which
// /proc/PID/stat gives start times: 100 on every architecture Linux runs.
const userHZ = 100

// Sampler is a loaded and attached BPF sampling program. Drain and Close must
// not be called concurrently; ReadEvents runs on its own goroutine;
// SetFilter may be called from any goroutine.
type Sampler struct {
	log      *slog.Logger
	cfgMu    sync.Mutex // config map writes (Drain's flip, SetFilter), closed
	objs     bpf.ScorchObjects
	links    []link.Link
	perfFDs  []int
	events   *ringbuf.Reader
	active   uint32
	tables   *tableManager  // nil with FramePointersOnly
	ownFiles *process.Files // the tables' file cache when Options gave none: closed with the sampler
	closed   bool
	CPUs     int
	// StackMapEntries is the size of the stack maps (Options).
	StackMapEntries int
	// GrowingMaps says the hash maps of growingMaps take memory as they
	// fill (BPF_F_NO_PREALLOC; Linux 6.1+ allows it in perf_event
	// programs); false where the kernel preallocates them.
	GrowingMaps bool
	Frequency   int
	lifecycle   bool // exec/exit hooks attached
	noBatch     bool // the kernel has no batch operations on hash maps
	// Program is the BPF program loaded: ProgramTables, or
	// ProgramFramePointers when asked for or the kernel lacks bpf_loop.
	Program Program
	buf     *drainBuffers
}

// noTablesOnce logs, once per process, that the kernel cannot run the table
// walk: it does not change while we run.
var noTablesOnce sync.Once

// Open probes the kernel, loads the best program it runs (see Program),
// opens the perf events and starts sampling.
func Open(opts Options) (_ *Sampler, err error) {
	if opts.Frequency <= 0 {
		opts.Frequency = 99
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	filter := opts.Filter
	filter.IncludePids = append(append([]uint32(nil), filter.IncludePids...), opts.Pids...)
	if _, _, err := filter.entries(); err != nil {
		return nil, err
	}
	if err := Preflight(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones
	// don't and RemoveMemlock is a no-op there. Failing to raise it is not
	// fatal: the load below says so if it matters.
	if err := rlimit.RemoveMemlock(); err != nil {
		opts.Logger.Debug("could not raise RLIMIT_MEMLOCK", "err", err)
	}

	s := &Sampler{log: opts.Logger, Frequency: opts.Frequency}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	prog, noTables, err := chooseProgram(opts.FramePointersOnly)
	if err != nil {
		return nil, err
	}
	s.Program = prog
	switch {
	case len(noTables) > 0:
		noTablesOnce.Do(func() { opts.Logger.Warn(noTablesMessage(noTables)) })
	case prog == ProgramFramePointers:
		opts.Logger.Info("unwind tables off: loading the frame-pointer-only BPF program")
	}
	opts.FramePointersOnly = prog == ProgramFramePointers
	spec, err := prog.spec()
	if err != nil {
		return nil, fmt.Errorf("parse embedded BPF object (%s): %w", prog, err)
	}
	cpus, err := onlineCPUs()
	if err != nil {
		return nil, err
	}
	if opts.StackMapEntries <= 0 {
		opts.StackMapEntries = StackMapEntriesFor(len(cpus), opts.Frequency)
	}
	s.StackMapEntries = opts.StackMapEntries
	for _, name := range []string{"stacks_kern0", "stacks_kern1", "stacks_user0", "stacks_user1", "stacks_unwound0", "stacks_unwound1"} {
		spec.Maps[name].MaxEntries = uint32(opts.StackMapEntries)
	}
	for _, name := range []string{"counts0", "counts1"} {
		spec.Maps[name].MaxEntries = uint32(2 * opts.StackMapEntries)
	}
	if opts.FramePointersOnly {
		// The maps stay (both objects declare them) but take no memory.
		for _, name := range []string{"unwind_rows", "unwind_files", "stacks_unwound0", "stacks_unwound1"} {
			spec.Maps[name].MaxEntries = 1
		}
		spec.Maps["deferred"].MaxEntries = uint32(os.Getpagesize()) // the smallest ring buffer
	} else {
		spec.Maps["deferred"].MaxEntries = deferredRingBytes
		if opts.UnwindTableBytes <= 0 {
			opts.UnwindTableBytes = DefaultUnwindTableBytes
		}
		spec.Maps["unwind_rows"].MaxEntries = uint32(max(1, min(opts.UnwindTableBytes/unwinder.RowSize, 1<<28)))
		if v := spec.Variables["unwind_page_shift"]; v != nil {
			if err := v.Set(uint32(pageShift)); err != nil {
				return nil, fmt.Errorf("set unwind_page_shift: %w", err)
			}
		}
	}
	spec.Maps["unwind_procs"].MaxEntries = uint32(procEntriesFor(len(cpus)))
	spec.Maps["seen_pids"].MaxEntries = uint32(2 * procEntriesFor(len(cpus)))
	// Hash maps take memory as they fill, where the kernel lets a
	// perf_event program use them so (Linux 6.1+: bpf_mem_alloc).
	for _, name := range growingMaps {
		spec.Maps[name].Flags |= unix.BPF_F_NO_PREALLOC
	}
	err = spec.LoadAndAssign(&s.objs, nil)
	if err != nil && strings.Contains(fmt.Sprintf("%+v", err), "preallocated hash map") {
		s.log.Info("this kernel wants preallocated hash maps in perf_event programs: the stack maps take their whole size up front")
		for _, name := range growingMaps {
			spec.Maps[name].Flags &^= unix.BPF_F_NO_PREALLOC
		}
		err = spec.LoadAndAssign(&s.objs, nil)
	} else {
		s.GrowingMaps = err == nil
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("the kernel's verifier rejected the BPF program: %+v", verr)
		}
		return nil, explainLoadError("load BPF objects", err)
	}
	var total uint64
	for _, n := range s.MapBytes() {
		total += n
	}
	s.log.Info("BPF maps loaded", "kernel_memory_mib", fmt.Sprintf("%.1f", float64(total)/(1<<20)), "stack_map_entries", opts.StackMapEntries)

	cfg := bpf.ScorchScorchConfig{}
	if opts.DropIdle {
		cfg.DropIdle = 1
	}
	if !opts.FramePointersOnly {
		cfg.Unwind = 1
		var cache *tableCache
		if opts.TableCacheDir != "" {
			if cache, err = newTableCache(opts.TableCacheDir, opts.TableCacheBytes, s.log); err != nil {
				s.log.Warn("unwind tables are not cached on disk", "err", err)
			}
		}
		pfiles := opts.Files
		if pfiles == nil {
			s.ownFiles = process.NewFiles(0)
			pfiles = s.ownFiles
		}
		s.tables, err = newTableManager(s.log, opts.ProcRoot, pfiles, &s.objs, s.barrier, cache)
		if err != nil {
			return nil, err
		}
		if len(filter.IncludePids) > 0 {
			// Load the tables of the chosen processes before sampling
			// starts, so that even their first samples unwind fully.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.tables.load(ctx, filter.IncludePids)
			cancel()
		} else {
			// Every process: the libraries most of them map, in the
			// background, for the processes that start from now on.
			s.tables.startWarm()
		}
	}
	if err := s.objs.Config.Put(uint32(0), cfg); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	if err := s.SetFilter(filter); err != nil {
		return nil, err
	}

	s.events, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}

	// Process exec/exit hooks: raw tracepoints need neither kprobes nor
	// tracefs. Without them we still sample; we only learn of new processes
	// from their first sample and of dead ones when /proc says so.
	if l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exec", Program: s.objs.ScorchExec}); err != nil {
		s.log.Warn("exec hook unavailable; processes that exec are noticed later", "err", err)
	} else {
		s.links = append(s.links, l)
		if l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_exit", Program: s.objs.ScorchExit}); err != nil {
			s.log.Warn("exit hook unavailable; dead processes are noticed later", "err", err)
		} else {
			s.links = append(s.links, l)
			s.lifecycle = true
		}
		if !opts.FramePointersOnly {
			// A forked process inherits its parent's mappings; without the
			// hook its first samples learn them one by one.
			if l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sched_process_fork", Program: s.objs.ScorchFork}); err != nil {
				s.log.Warn("fork hook unavailable; forked processes learn their mappings later", "err", err)
			} else {
				s.links = append(s.links, l)
			}
		}
	}

	for _, cpu := range cpus {
		if err := s.attachCPU(cpu, opts.Frequency); err != nil {
			return nil, err
		}
	}
	s.CPUs = len(cpus)
	return s, nil
}

// attachByIoctl makes attachCPU skip the BPF link and attach the way
// kernels before 5.15 need (a test sets it, to run that path here).
var attachByIoctl bool

func (s *Sampler) attachCPU(cpu, freq int) error {
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Sample: uint64(freq),
		Bits:   unix.PerfBitFreq,
	}
	fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("open cpu-clock perf event on CPU %d at %d Hz: %w (is --frequency above kernel.perf_event_max_sample_rate?)", cpu, freq, err)
		}
		return explainLoadError(fmt.Sprintf("open cpu-clock perf event on CPU %d", cpu), err)
	}
	s.perfFDs = append(s.perfFDs, fd)
	if !attachByIoctl {
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: s.objs.ScorchSample, Attach: ebpf.AttachPerfEvent})
		if err == nil {
			s.links = append(s.links, l)
			return nil
		}
		if len(s.perfFDs) == 1 {
			s.log.Info("no BPF link for perf events (before Linux 5.15): attaching by ioctl", "err", err)
		}
	}
	// Kernels before 5.15 have no perf-event BPF links (only the
	// frame-pointer program loads there): attach by ioctl. The program then
	// stays attached for as long as the perf event fd is open, which Close
	// ends.
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, s.objs.ScorchSample.FD()); err != nil {
		return explainLoadError(fmt.Sprintf("attach BPF program to CPU %d", cpu), err)
	}
	return unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0)
}

// LifecycleHooks says whether exec/exit events are delivered.
func (s *Sampler) LifecycleHooks() bool { return s.lifecycle }

// ReadEvents delivers process lifecycle events to fn until ctx ends or the
// sampler is closed. Run it on one goroutine of its own. It also passes
// the events to the unwind table worker: without a running ReadEvents, no
// tables are loaded (but for Options.Pids) and stacks use frame pointers.
func (s *Sampler) ReadEvents(ctx context.Context, fn func(Event)) error {
	return readRing(ctx, s.events, "events", func(rec []byte) {
		if len(rec) < int(unsafe.Sizeof(bpf.ScorchEvent{})) {
			return
		}
		raw := (*bpf.ScorchEvent)(unsafe.Pointer(&rec[0]))
		fn(Event{
			Type:      EventType(raw.Type),
			Pid:       raw.Pid,
			StartTime: raw.StartBoottime / (1e9 / userHZ),
			CgroupID:  raw.CgroupId,
			Comm:      commString(raw.Comm),
		})
	})
}

// readRing passes each record of rd to fn until ctx ends (it returns
// ctx.Err()) or rd is closed (nil). what names the ring in errors.
func readRing(ctx context.Context, rd *ringbuf.Reader, what string, fn func(rec []byte)) error {
	var rec ringbuf.Record
	for ctx.Err() == nil {
		rd.SetDeadline(time.Now().Add(200 * time.Millisecond))
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("read %s: %w", what, err)
		}
		fn(rec.RawSample)
	}
	return ctx.Err()
}

// Cost is what the sampler costs the kernel.
type Cost struct {
	// Runs and RunTime are the sampling program's run count and total run
	// time. They stay zero unless BPF statistics are enabled
	// (sysctl kernel.bpf_stats_enabled=1, or ebpf.EnableStats).
	Runs    uint64
	RunTime time.Duration
	// MapBytes is the kernel memory of each BPF map, by map name.
	MapBytes map[string]uint64
}

// Cost reads the sampling program's run statistics and the maps' kernel
// memory.
func (s *Sampler) Cost() (Cost, error) {
	c := Cost{MapBytes: map[string]uint64{}}
	ps, err := s.objs.ScorchSample.Stats()
	if err != nil {
		return c, fmt.Errorf("read program statistics: %w", err)
	}
	c.Runs, c.RunTime = ps.RunCount, ps.Runtime
	v := reflect.ValueOf(s.objs.ScorchMaps)
	for i := 0; i < v.NumField(); i++ {
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || m == nil {
			continue
		}
		name := v.Type().Field(i).Tag.Get("ebpf")
		info, err := m.Info()
		if err != nil {
			return c, fmt.Errorf("map %s: %w", name, err)
		}
		if b, ok := info.Memlock(); ok {
			c.MapBytes[name] = b
		}
	}
	return c, nil
}

// TableStats describes the unwind tables in the kernel; zero with
// Options.FramePointersOnly.
func (s *Sampler) TableStats() TableStats {
	if s.tables == nil {
		return TableStats{}
	}
	return s.tables.Stats()
}

type mapSet struct {
	counts, kern, user, unwound *ebpf.Map
}

func (s *Sampler) set(i uint32) mapSet {
	if i == 0 {
		return mapSet{s.objs.Counts0, s.objs.StacksKern0, s.objs.StacksUser0, s.objs.StacksUnwound0}
	}
	return mapSet{s.objs.Counts1, s.objs.StacksKern1, s.objs.StacksUser1, s.objs.StacksUnwound1}
}

// barrier returns once no BPF program that started before the call is
// still running (see the package doc).
func (s *Sampler) barrier() error {
	return s.objs.SyncBarrier.Put(uint32(0), s.objs.BarrierInner)
}

// Drain returns every sample recorded since the previous Drain (or Open)
// and the program's counters.
func (s *Sampler) Drain() ([]Sample, Stats, error) {
	return s.drain(false)
}

// DrainFinal is Drain for the last time: the samples whose user stacks
// wait in user space for a table (see Stats.Deferred) are finished with
// what there is rather than left waiting.
func (s *Sampler) DrainFinal() ([]Sample, Stats, error) {
	return s.drain(true)
}

func (s *Sampler) drain(final bool) ([]Sample, Stats, error) {
	old := s.active
	next := 1 - old
	if err := s.flip(next); err != nil {
		return nil, Stats{}, err
	}
	s.active = next
	// Wait for programs still running against the old set (see package doc).
	if err := s.barrier(); err != nil {
		return nil, Stats{}, fmt.Errorf("wait for running BPF programs: %w", err)
	}

	ms := s.set(old)
	samples, err := s.drainSet(ms)
	if s.tables != nil {
		// Samples whose user stacks user space finished (deferred.go).
		samples = append(samples, s.tables.takeFinished(final)...)
	}
	st, serr := s.Stats()
	if err == nil {
		err = serr
	}
	return samples, st, err
}

// flip makes the program write to map set next.
func (s *Sampler) flip(next uint32) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	cfg := bpf.ScorchScorchConfig{}
	if err := s.objs.Config.Lookup(uint32(0), &cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg.ActiveSet = next
	if err := s.objs.Config.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("flip map set: %w", err)
	}
	return nil
}

// drainSet reads every sample of map set ms and leaves the set empty. It
// reads and deletes the maps a batch of entries per system call
// (BPF_MAP_LOOKUP_AND_DELETE_BATCH); kernels without batch operations on
// hash maps get one call per key (readSet, then clearSet).
func (s *Sampler) drainSet(ms mapSet) ([]Sample, error) {
	if !s.noBatch {
		samples, err := s.drainSetBatch(ms)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return samples, err
		}
		s.noBatch = true
		s.log.Debug("batch map operations unsupported; draining one key at a time", "err", err)
	}
	samples, err := s.readSet(ms)
	if cerr := clearSet(ms); cerr != nil && err == nil {
		err = cerr
	}
	return samples, err
}

// drainBatch is how many entries one batch system call moves.
const drainBatch = 256

// drainMap reads and deletes every entry of m in batches, calling fn for
// each. keys and vals are the buffers, of one length.
func drainMap[K, V any](m *ebpf.Map, keys []K, vals []V, fn func(*K, *V)) error {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := range min(n, len(keys)) {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("drain %s: %w", m, err)
		}
	}
}

func (s *Sampler) drainSetBatch(ms mapSet) ([]Sample, error) {
	if s.buf == nil {
		s.buf = &drainBuffers{}
	}
	b := s.buf
	// Stacks first: no sample can refer to one the drain has not read.
	kstacks := map[uint64][]uint64{}
	ustacks := map[uint64][]uint64{}
	copyRaw := func(raw *bpf.ScorchRawStack) []uint64 {
		n := 0
		for n < len(raw.Pcs) && raw.Pcs[n] != 0 {
			n++
		}
		return append([]uint64(nil), raw.Pcs[:n]...)
	}
	if err := drainMap(ms.kern, b.hashes[:], b.raw[:], func(h *uint64, v *bpf.ScorchRawStack) { kstacks[*h] = copyRaw(v) }); err != nil {
		return nil, err
	}
	if err := drainMap(ms.user, b.hashes[:], b.raw[:], func(h *uint64, v *bpf.ScorchRawStack) { ustacks[*h] = copyRaw(v) }); err != nil {
		return nil, err
	}
	unwound := map[uint64]unwoundStack{}
	if err := drainMap(ms.unwound, b.hashes[:], b.unwound[:], func(h *uint64, v *bpf.ScorchUnwindStack) { unwound[*h] = unwoundOf(v) }); err != nil {
		return nil, err
	}

	var samples []Sample
	err := drainMap(ms.counts, b.keys[:], b.counts[:], func(key *bpf.ScorchSampleKey, count *uint64) {
		smp := Sample{
			Pid:   key.Pid,
			Tid:   key.Tid,
			Comm:  commString(key.Comm),
			Count: *count,
		}
		smp.Kernel, smp.KernelLost = drainedStack(kstacks, key.KernStackId, key.KernStackHash)
		if key.UserStackId == stackUnwound {
			st, ok := unwound[key.UserStackHash]
			if !ok {
				st.lost = true
			}
			smp.User, smp.UserLost, smp.UserTruncated, smp.UserCallerUnknown = st.pcs, st.lost, st.truncated, st.callerUnknown
		} else {
			smp.User, smp.UserLost = drainedStack(ustacks, key.UserStackId, key.UserStackHash)
		}
		samples = append(samples, smp)
	})
	return samples, err
}

// drainBuffers are the batch buffers of drainSetBatch, kept between drains
// (about 300 KiB).
type drainBuffers struct {
	hashes  [drainBatch]uint64
	raw     [drainBatch]bpf.ScorchRawStack
	unwound [drainBatch]bpf.ScorchUnwindStack
	keys    [drainBatch]bpf.ScorchSampleKey
	counts  [drainBatch]uint64
}

// drainedStack returns the stack a sample key names from the stacks
// drained from its map.
func drainedStack(stacks map[uint64][]uint64, id int32, hash uint64) ([]uint64, bool) {
	switch id {
	case stackLost:
		return nil, true
	case stackHashed:
		st, ok := stacks[hash]
		return st, !ok
	}
	return nil, false // STACK_NONE
}

// readSet reads every sample of map set ms one key at a time.
func (s *Sampler) readSet(ms mapSet) ([]Sample, error) {
	var (
		key     bpf.ScorchSampleKey
		count   uint64
		samples []Sample
	)
	kstacks := map[uint64][]uint64{}
	ustacks := map[uint64][]uint64{}
	unwound := map[uint64]unwoundStack{}
	it := ms.counts.Iterate()
	for it.Next(&key, &count) {
		smp := Sample{
			Pid:   key.Pid,
			Tid:   key.Tid,
			Comm:  commString(key.Comm),
			Count: count,
		}
		smp.Kernel, smp.KernelLost = stackOf(ms.kern, key.KernStackId, key.KernStackHash, kstacks)
		if key.UserStackId == stackUnwound {
			st, ok := unwound[key.UserStackHash]
			if !ok {
				st = readUnwound(ms.unwound, key.UserStackHash)
				unwound[key.UserStackHash] = st
			}
			smp.User, smp.UserLost, smp.UserTruncated, smp.UserCallerUnknown = st.pcs, st.lost, st.truncated, st.callerUnknown
		} else {
			smp.User, smp.UserLost = stackOf(ms.user, key.UserStackId, key.UserStackHash, ustacks)
		}
		samples = append(samples, smp)
	}
	if err := it.Err(); err != nil {
		return samples, fmt.Errorf("read counts: %w", err)
	}
	return samples, nil
}

// stackOf returns the addresses of the stack with id and hash, from cache
// or the map, and whether it was lost.
func stackOf(m *ebpf.Map, id int32, hash uint64, cache map[uint64][]uint64) ([]uint64, bool) {
	switch id {
	case stackLost:
		return nil, true
	case stackHashed:
	default:
		return nil, false // STACK_NONE
	}
	if st, ok := cache[hash]; ok {
		return st, st == nil
	}
	var raw bpf.ScorchRawStack
	if err := m.Lookup(hash, &raw); err != nil {
		cache[hash] = nil
		return nil, true
	}
	n := 0
	for n < len(raw.Pcs) && raw.Pcs[n] != 0 {
		n++
	}
	st := append([]uint64(nil), raw.Pcs[:n]...)
	cache[hash] = st
	return st, false
}

// Stack ids of a sample key (STACK_* in scorch.bpf.c).
const (
	stackLost    = -2 // the stack's map was full
	stackUnwound = -3 // the user stack is in stacks_unwound
	stackHashed  = -4 // the stack is in stacks_kern or stacks_user
)

type unwoundStack struct {
	pcs                            []uint64
	lost, truncated, callerUnknown bool
}

func readUnwound(m *ebpf.Map, hash uint64) unwoundStack {
	var v bpf.ScorchUnwindStack
	if err := m.Lookup(hash, &v); err != nil {
		return unwoundStack{lost: true}
	}
	return unwoundOf(&v)
}

func unwoundOf(v *bpf.ScorchUnwindStack) unwoundStack {
	n := min(int(v.N), len(v.Pcs))
	return unwoundStack{
		pcs:           append([]uint64(nil), v.Pcs[:n]...),
		truncated:     v.Stop != uint32(bpf.ScorchUnwindStopUNWIND_STOP_END),
		callerUnknown: v.LeafCaller != uint32(bpf.ScorchUnwindCallerUNWIND_CALLER_OK) && n > 1,
	}
}

func clearSet(ms mapSet) error {
	var errs []error
	for _, m := range []*ebpf.Map{ms.counts, ms.kern, ms.user, ms.unwound} {
		if err := clearMap(m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clearMap deletes every key of m. Keys are collected first: deleting while
// walking with NextKey restarts the walk on some map types.
func clearMap(m *ebpf.Map) error {
	keys, err := m.NextKeyBytes(nil)
	if err != nil {
		return err
	}
	var all [][]byte
	for k := keys; k != nil; {
		all = append(all, k)
		if k, err = m.NextKeyBytes(k); err != nil {
			return err
		}
	}
	for _, k := range all {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear %s: %w", m, err)
		}
	}
	return nil
}

// Stats reads the program's counters (totals since Open).
func (s *Sampler) Stats() (Stats, error) {
	var st Stats
	fields := map[bpf.ScorchStatKey]*uint64{
		bpf.ScorchStatKeySTAT_SAMPLES:           &st.Samples,
		bpf.ScorchStatKeySTAT_IDLE_DROPPED:      &st.IdleDropped,
		bpf.ScorchStatKeySTAT_FILTERED:          &st.Filtered,
		bpf.ScorchStatKeySTAT_LOST_USER_STACK:   &st.LostUserStack,
		bpf.ScorchStatKeySTAT_LOST_KERNEL_STACK: &st.LostKernelStack,
		bpf.ScorchStatKeySTAT_LOST_COUNTS_FULL:  &st.LostCountsFull,
		bpf.ScorchStatKeySTAT_LOST_PID_EVENT:    &st.LostPidEvents,
		bpf.ScorchStatKeySTAT_UNWOUND:           &st.Unwound,
		bpf.ScorchStatKeySTAT_UNWIND_MAX_FRAMES: &st.UnwindMaxFrames,
		bpf.ScorchStatKeySTAT_UNWIND_READ:       &st.UnwindReadFailed,
		bpf.ScorchStatKeySTAT_UNWIND_BAD_FRAME:  &st.UnwindBadFrame,
		bpf.ScorchStatKeySTAT_UNWIND_NO_LR:      &st.UnwindNoLR,
		bpf.ScorchStatKeySTAT_LOST_UNWOUND_FULL: &st.LostUnwoundStacks,
		bpf.ScorchStatKeySTAT_EXCLUDED:          &st.Excluded,
		bpf.ScorchStatKeySTAT_CALLER_NO_TABLE:   &st.CallerNoTable,
		bpf.ScorchStatKeySTAT_CALLER_PENDING:    &st.CallerPending,
		bpf.ScorchStatKeySTAT_CALLER_NO_MAPPING: &st.CallerNoMapping,
		bpf.ScorchStatKeySTAT_FILE_REQUESTS:     &st.FileRequests,
		bpf.ScorchStatKeySTAT_LOST_FILE_REQUEST: &st.LostFileRequests,
		bpf.ScorchStatKeySTAT_DEFERRED:          &st.Deferred,
		bpf.ScorchStatKeySTAT_LOST_DEFERRED:     &st.LostDeferred,
	}
	for k, dst := range fields {
		var perCPU []uint64
		if err := s.objs.Stats.Lookup(uint32(k), &perCPU); err != nil {
			return st, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return st, nil
}

// Close detaches the program and frees every kernel object it held.
func (s *Sampler) Close() error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	var errs []error
	if s.tables != nil && !s.closed {
		// s.tables stays set: a ReadEvents still running may notify it.
		s.tables.close()
		if s.ownFiles != nil {
			s.ownFiles.Close()
		}
	}
	s.closed = true
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	for _, fd := range s.perfFDs {
		errs = append(errs, unix.Close(fd))
	}
	s.perfFDs = nil
	if s.events != nil {
		errs = append(errs, s.events.Close())
		s.events = nil
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}

// onlineCPUs parses /sys/devices/system/cpu/online ("0-3,5,7-8").
func onlineCPUs() ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return nil, fmt.Errorf("list online CPUs: %w", err)
	}
	return parseCPUList(strings.TrimSpace(string(b)))
}

func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("malformed CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("malformed CPU list %q", s)
			}
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("empty CPU list %q", s)
	}
	return cpus, nil
}
