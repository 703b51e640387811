// Package profiler runs the sampling loop shared by `scorch record` and
// `scorch agent`: it owns a sampler.Sampler, drains it on an interval, makes
// sure the symbolizer has seen every process before its samples are
// resolved, and is the one owner of which processes have state: it
// releases a process's state everywhere (symbolizer, kernel, caller) once
// its last samples were handed out (see lifecycle.go).
package profiler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// Symbolizer is what the loop needs of package symbolizer.
type Symbolizer interface {
	exporter.Resolver
	// Observe reads a process's mappings while it is alive.
	Observe(pid uint32) error
	// Refresh reads them again (or observes the process): its image
	// changed (exec) or was being replaced when it was observed.
	Refresh(pid uint32) error
	// Forget drops a process's state.
	Forget(pid uint32)
	// UseKernelMappings gives the symbolizer the kernel's knowledge of
	// a process's mappings, for the samples of processes that exited
	// before their mappings could be read (sampler.KernelMappings).
	UseKernelMappings(func(pid uint32) []process.Mapping)
	// Files is its cache of opened, parsed files, which the sampler's
	// unwind-table worker shares.
	Files() *process.Files
}

// Config configures a Profiler.
type Config struct {
	Sampler sampler.Options
	// DrainInterval is how often the kernel maps are drained (default 1s).
	DrainInterval time.Duration
	// NextDrain, if set, overrides DrainInterval: it returns when to drain
	// next, given the time of the previous drain. The agent uses it to
	// drain exactly at window boundaries.
	NextDrain  func(prev time.Time) time.Time
	Symbolizer Symbolizer
	// OnObserve, if set, is called after a process's mappings were read
	// while it lives (on the event reader goroutine, or Run's).
	OnObserve func(Observed)
	// OnForget, if set, is called (on Run's goroutine) for each process
	// whose state is released after it exited.
	OnForget func(pid uint32)
	// OnEvent, if set, is called with every process lifecycle event, on
	// the event reader goroutine (which Run owns), before the profiler
	// handles it (reading a new process's mappings takes a while). It must
	// not block: the events of the whole host wait behind it.
	OnEvent func(sampler.Event)
	Logger  *slog.Logger
}

// Observed is a process whose mappings were just read.
type Observed struct {
	Pid uint32
	// Changed says they were read again because its image changed
	// (exec), so that what the caller derived from the old one is stale.
	Changed bool
	// Comm and CgroupID are the kernel's, from the event that announced
	// the process (see sampler.Event); "" and 0 when it was first met in
	// a drain.
	Comm     string
	CgroupID uint64
}

// Batch is what one drain produced.
type Batch struct {
	Samples []sampler.Sample
	Stats   sampler.Stats // totals since the profiler started
	Time    time.Time     // when the drain happened
	// Scheduled is when the drain was due (Time is a little later): the
	// batch holds the samples taken before it. On the final drain, after
	// Run's context ended, Scheduled equals Time and Final is set.
	Scheduled time.Time
	Final     bool
}

// Profiler is a running sampler plus its drain loop.
type Profiler struct {
	cfg     Config
	log     *slog.Logger
	sampler *sampler.Sampler

	tracked *tracked
	// kernelStarts says whether the start times events carry agree with
	// /proc's (checked at the first one): 0 not checked yet, 1 they do,
	// -1 they do not (the agent's /proc is in another time namespace)
	// and /proc is read instead. Read and set on the event goroutine.
	kernelStarts int

	mu      sync.Mutex
	pending []uint32 // processes to forget after their last samples are out
}

// Open loads the BPF program and starts sampling. Samples accumulate in the
// kernel until Run drains them.
func Open(cfg Config) (*Profiler, error) {
	if cfg.DrainInterval <= 0 {
		cfg.DrainInterval = time.Second
	}
	if cfg.NextDrain == nil {
		d := cfg.DrainInterval
		cfg.NextDrain = func(prev time.Time) time.Time { return prev.Add(d) }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Sampler.Logger = cfg.Logger
	// One cache of opened, parsed files for the unwinder's tables and the
	// symbols: each mapped file is opened and parsed once.
	cfg.Sampler.Files = cfg.Symbolizer.Files()
	s, err := sampler.Open(cfg.Sampler)
	if err != nil {
		return nil, err
	}
	cfg.Symbolizer.UseKernelMappings(s.KernelMappings)
	procRoot := cfg.Sampler.ProcRoot
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Profiler{cfg: cfg, log: cfg.Logger, sampler: s, tracked: newTracked(procRoot)}, nil
}

// CPUs is the number of CPUs sampled.
func (p *Profiler) CPUs() int { return p.sampler.CPUs }

// MapBytes is the kernel memory of each BPF map (sampler.Sampler.MapBytes).
func (p *Profiler) MapBytes() map[string]uint64 { return p.sampler.MapBytes() }

// Run drains the sampler every DrainInterval and hands each batch to fn, on
// Run's goroutine, until ctx ends; then it drains once more so that nothing
// sampled before the end is lost, and returns. Process lifecycle events are
// read on a goroutine Run owns and waits for.
func (p *Profiler) Run(ctx context.Context, fn func(Batch)) error {
	evCtx, stopEvents := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.sampler.ReadEvents(evCtx, p.onEvent); err != nil && !errors.Is(err, context.Canceled) {
			p.log.Warn("process events stopped", "err", err)
		}
	}()
	defer func() {
		stopEvents()
		wg.Wait()
	}()

	due := p.cfg.NextDrain(time.Now())
	t := time.NewTimer(time.Until(due))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			now := time.Now()
			return p.drain(now, true, fn)
		case <-t.C:
			if err := p.drain(due, false, fn); err != nil {
				return err
			}
			next := p.cfg.NextDrain(due)
			if now := time.Now(); !next.After(now) {
				// We fell behind (a slow drain): skip the missed slots.
				for !next.After(now) {
					next = p.cfg.NextDrain(next)
				}
			}
			due = next
			t.Reset(time.Until(due))
		}
	}
}

// onEvent acts on a lifecycle event as it arrives, while the process is
// most likely alive: on a busy host a process that lives 50 ms has exited
// long before the next drain, and its mappings can no longer be read.
func (p *Profiler) onEvent(ev sampler.Event) {
	if p.cfg.OnEvent != nil {
		p.cfg.OnEvent(ev)
	}
	switch ev.Type {
	case sampler.EventNewPid:
		// The first sample since the process's exec (or its first code
		// in a mapping new to the kernel): read its mappings, again if it
		// was read before (a sample taken inside execve, or before it,
		// announced the process while its new program was not mapped
		// yet; ld.so maps libraries after the first samples).
		p.observe(ev.Pid, true, &ev)
	case sampler.EventExec:
		// The kernel reports the exec of processes it announced (and of
		// those the filter excludes by pid); of those, only processes
		// with state need reading again (one not read yet is read at its
		// first sample). On a host that runs hundreds of short programs
		// a second, waking for and reading every one of them cost the
		// agent more than sampling. At the exec tracepoint the new
		// program and its loader are mapped.
		if p.tracked.has(ev.Pid) {
			p.observe(ev.Pid, true, &ev)
		}
	case sampler.EventExit:
		p.mu.Lock()
		p.pending = append(p.pending, ev.Pid)
		p.mu.Unlock()
	}
}

func (p *Profiler) drain(scheduled time.Time, final bool, fn func(Batch)) error {
	// Lifecycle events seen before this drain concern samples that are in
	// it at the latest: act on them once the batch is handed out.
	p.mu.Lock()
	dead := p.pending
	p.pending = nil
	p.mu.Unlock()

	drain := p.sampler.Drain
	if final {
		drain = p.sampler.DrainFinal // nothing left waiting for a table
	}
	samples, st, err := drain()
	if err != nil {
		return err
	}
	seen := map[uint32]bool{}
	for _, s := range samples {
		if len(s.User) > 0 && !seen[s.Pid] {
			seen[s.Pid] = true
			if !p.observe(s.Pid, false, nil) {
				// Gone before it could be read: its samples are named
				// through the kernel's mappings, and the state that
				// creates goes after this batch.
				dead = append(dead, s.Pid)
			}
		}
	}
	fn(Batch{Samples: samples, Stats: st, Time: time.Now(), Scheduled: scheduled, Final: final})

	dead = append(dead, p.tracked.gone(time.Now())...)
	var later []uint32
	for _, pid := range dead {
		if !final && p.sampler.HoldsDeferred(pid) {
			// Samples of it wait in user space for a table and come out
			// in a later batch: they are named with what is forgotten here.
			later = append(later, pid)
			continue
		}
		p.forget(pid)
	}
	if len(later) > 0 {
		p.mu.Lock()
		p.pending = append(p.pending, later...)
		p.mu.Unlock()
	}
	return nil
}

// Close stops sampling and frees the kernel objects.
func (p *Profiler) Close() error { return p.sampler.Close() }

// SetFilter changes which processes the BPF program records (see
// sampler.Filter); it may be called from any goroutine until Close.
func (p *Profiler) SetFilter(f sampler.Filter) error { return p.sampler.SetFilter(f) }

// TableStats describes the unwind tables and the deferred samples (see
// sampler.TableStats).
func (p *Profiler) TableStats() sampler.TableStats { return p.sampler.TableStats() }
