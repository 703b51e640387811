// Package profiler runs the sampling loop shared by `scorch record` and
// `scorch agent`: it owns a sampler.Sampler, drains it on an interval, makes
// sure the symbolizer has seen every process before its samples are
// resolved, and releases the symbolizer's state of processes that exited
// once their last samples were handed out.
package profiler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// Symbolizer is what the loop needs of package symbolizer.
type Symbolizer interface {
	exporter.Resolver
	// Observe reads a process's mappings while it is alive.
	Observe(pid uint32) error
	// Forget drops a process's state.
	Forget(pid uint32)
}

// Config configures a Profiler.
type Config struct {
	Sampler sampler.Options
	// DrainInterval is how often the kernel maps are drained (default 1s).
	DrainInterval time.Duration
	Symbolizer    Symbolizer
	Logger        *slog.Logger
}

// Batch is what one drain produced.
type Batch struct {
	Samples []sampler.Sample
	Stats   sampler.Stats // totals since the profiler started
	Time    time.Time     // when the drain happened
}

// Profiler is a running sampler plus its drain loop.
type Profiler struct {
	cfg     Config
	log     *slog.Logger
	sampler *sampler.Sampler

	mu      sync.Mutex
	pending []uint32 // processes to forget after their last samples are out
	execed  []uint32 // processes to read again after an exec
}

// Open loads the BPF program and starts sampling. Samples accumulate in the
// kernel until Run drains them.
func Open(cfg Config) (*Profiler, error) {
	if cfg.DrainInterval <= 0 {
		cfg.DrainInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Sampler.Logger = cfg.Logger
	s, err := sampler.Open(cfg.Sampler)
	if err != nil {
		return nil, err
	}
	return &Profiler{cfg: cfg, log: cfg.Logger, sampler: s}, nil
}

// CPUs is the number of CPUs sampled.
func (p *Profiler) CPUs() int { return p.sampler.CPUs }

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

	t := time.NewTicker(p.cfg.DrainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return p.drain(fn)
		case <-t.C:
			if err := p.drain(fn); err != nil {
				return err
			}
		}
	}
}

func (p *Profiler) onEvent(ev sampler.Event) {
	switch ev.Type {
	case sampler.EventNewPid:
		if err := p.cfg.Symbolizer.Observe(ev.Pid); err != nil {
			p.log.Debug("observe process", "pid", ev.Pid, "err", err)
		}
	case sampler.EventExec:
		p.mu.Lock()
		p.execed = append(p.execed, ev.Pid)
		p.mu.Unlock()
	case sampler.EventExit:
		p.mu.Lock()
		p.pending = append(p.pending, ev.Pid)
		p.mu.Unlock()
	}
}

func (p *Profiler) drain(fn func(Batch)) error {
	// Lifecycle events seen before this drain concern samples that are in
	// it at the latest: act on them once the batch is handed out.
	p.mu.Lock()
	dead, execed := p.pending, p.execed
	p.pending, p.execed = nil, nil
	p.mu.Unlock()

	samples, st, err := p.sampler.Drain()
	if err != nil {
		return err
	}
	seen := map[uint32]bool{}
	for _, s := range samples {
		if len(s.User) > 0 && !seen[s.Pid] {
			seen[s.Pid] = true
			_ = p.cfg.Symbolizer.Observe(s.Pid) // cheap when already observed
		}
	}
	fn(Batch{Samples: samples, Stats: st, Time: time.Now()})

	for _, pid := range dead {
		p.cfg.Symbolizer.Forget(pid)
	}
	for _, pid := range execed {
		p.cfg.Symbolizer.Forget(pid)
		_ = p.cfg.Symbolizer.Observe(pid)
	}
	return nil
}

// Close stops sampling and frees the kernel objects.
func (p *Profiler) Close() error { return p.sampler.Close() }
