// Package agent is `scorch agent`: it profiles the host continuously, closes
// a window every Config.Interval (aligned to wall-clock multiples of it),
// builds one pprof per target (a service_name plus its labels), keeps each
// in the local store and pushes it to Pyroscope, and serves the viewer,
// /metrics, /healthz and /debug/pprof/ on a listener.
//
// Goroutines and their owners: Run owns them all. The profiler's drain loop
// runs on Run's goroutine (and owns the lifecycle-event reader); the
// exporter's sender, the HTTP server and the in-kernel filter's loop (with
// --include/--exclude rules, see filterLoop) each run on a goroutine Run
// starts and waits for before it returns.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/exporter/pyroscope"
	"github.com/scorch-profiler/scorch/internal/profiler"
	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/symbolizer"
	"github.com/scorch-profiler/scorch/web"
)

// Agent is a configured agent; Run runs it.
type Agent struct {
	cfg Config
	log *slog.Logger

	sym     *symbolizer.Symbolizer
	prof    atomic.Pointer[profiler.Profiler] // set while Run runs, for /metrics
	lock    *dataDirLock
	store   *store.Store
	exp     *pyroscope.Exporter
	targets *targets
	m       *metrics
	filter  *filterLoop // nil without --include/--exclude rules; set by Run

	// The window being filled: a profile per target, and with a store
	// one of all targets (merged) that the viewer reads when it needs
	// no target apart (store.PutWindowMerged).
	winStart time.Time
	windows  map[string]*targetWindow
	merged   *exporter.Builder
	frames   *exporter.Frames // the sample's named addresses, shared by the window's builders

	ready atomic.Bool
}

type targetWindow struct {
	labels  map[string]string
	builder *exporter.Builder
}

// New checks cfg and prepares the agent's parts that need no privileges:
// the store, the exporter. Nothing is loaded into the kernel yet.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	if logger == nil {
		logger = slog.Default()
	}
	a := &Agent{cfg: cfg, log: logger, windows: map[string]*targetWindow{}}
	dm := symbolizer.DemangleFull
	switch cfg.Demangle {
	case "simplified":
		dm = symbolizer.DemangleSimplified
	case "none":
		dm = symbolizer.DemangleNone
	}
	// Decompressed debug sections go to DATA-DIR/spill on disk, not to
	// the heap (symbolizer.Options.SpillDir); emptied below, once the
	// data directory is ours, of what an agent that crashed left.
	var spill string
	if cfg.DataDir != "" {
		spill = filepath.Join(cfg.DataDir, "spill")
	}
	a.sym = symbolizer.New(symbolizer.Options{CacheBytes: cfg.SymbolCache, Demangle: dm, Logger: logger, SpillDir: spill})
	a.targets = newTargets(&a.cfg, "/proc")
	a.targets.exe = a.sym.ExePath
	a.frames = exporter.NewFrames(a.sym)
	if cfg.DataDir != "" {
		lock, err := lockDataDir(cfg.DataDir)
		if err != nil {
			a.sym.Close()
			return nil, err
		}
		a.lock = lock
		err = os.RemoveAll(spill)
		if err == nil {
			err = os.Mkdir(spill, 0o700)
		}
		if err != nil {
			logger.Warn("decompressed debug sections will be kept in memory", "err", err)
		}
		st, err := store.Open(cfg.DataDir, store.Options{MaxAge: cfg.Retention, MaxBytes: cfg.RetentionSize, Logger: logger})
		if err != nil {
			a.sym.Close()
			a.lock.release()
			return nil, fmt.Errorf("local store: %w", err)
		}
		a.store = st
	}
	if cfg.PyroscopeURL != "" {
		exp, err := pyroscope.New(pyroscope.Config{
			URL:                cfg.PyroscopeURL,
			BasicAuthUser:      cfg.PyroscopeUser,
			BasicAuthPassword:  cfg.PyroscopePassword,
			BearerToken:        cfg.PyroscopeToken,
			TenantID:           cfg.PyroscopeTenant,
			CAFile:             cfg.PyroscopeCAFile,
			InsecureSkipVerify: cfg.PyroscopeInsecure,
			Timeout:            cfg.PyroscopeTimeout,
			QueueBytes:         cfg.QueueSize,
		}, logger)
		if err != nil {
			a.close()
			return nil, fmt.Errorf("pyroscope: %w", err)
		}
		a.exp = exp
	}
	a.m = newMetrics(a)
	return a, nil
}

func (a *Agent) close() {
	if a.store != nil {
		a.store.Close()
	}
	a.lock.release()
	a.sym.Close()
}

// Run profiles until ctx ends, then closes the last (partial) window,
// flushes the exporter for a bounded time and returns.
func (a *Agent) Run(ctx context.Context) error {
	defer a.close()

	var wg sync.WaitGroup
	defer wg.Wait()

	// The listener first, so that a port conflict fails before we load
	// anything into the kernel.
	var srv *http.Server
	if a.cfg.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", a.cfg.Listen, err)
		}
		srv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("listener stopped", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		a.log.Info("listening", "addr", ln.Addr().String(), "viewer", "http://"+ln.Addr().String()+"/")
	}

	// The in-kernel filter of --include/--exclude: the first one is in
	// place before sampling starts; fl keeps it in step afterwards.
	fl := newFilterLoop(a.cfg.Include, a.cfg.Exclude, a.targets.procRoot, a.log)
	a.filter = fl
	opts := sampler.Options{Frequency: a.cfg.Frequency, DropIdle: a.cfg.DropIdle, StackMapEntries: a.cfg.StackMapSize}
	if a.cfg.DataDir != "" {
		// Unwind tables built once per binary, across restarts.
		opts.TableCacheDir = filepath.Join(a.cfg.DataDir, "unwind-tables")
	}
	var onEvent func(sampler.Event)
	if fl != nil {
		if f, ok := fl.compute(); ok {
			opts.Filter = f
		}
		onEvent = fl.onEvent
	}
	prof, err := profiler.Open(profiler.Config{
		Sampler:    opts,
		NextDrain:  a.nextDrain,
		Symbolizer: a.sym,
		// A process's target is resolved while it lives (a process
		// that lives 50 ms is gone by the next drain), again when its
		// image changed, and leaves the cache with the process.
		OnObserve: func(o profiler.Observed) {
			if o.Changed {
				a.targets.forget(o.Pid)
			}
			a.targets.prewarm(o.Pid, o.Comm, o.CgroupID)
		},
		OnForget: a.targets.forget,
		OnEvent:  onEvent,
		Logger:   a.log,
	})
	if err != nil {
		return err
	}
	a.prof.Store(prof)
	defer prof.Close()
	if fl != nil {
		fl.installed(opts.Filter)
		fl.set = prof.SetFilter
		// Stopped and waited for before prof.Close (defers run last in,
		// first out).
		flCtx, stopFilter := context.WithCancel(ctx)
		var flDone sync.WaitGroup
		flDone.Go(func() { fl.run(flCtx) })
		defer func() {
			stopFilter()
			flDone.Wait()
		}()
	}

	// Everything that needs CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN is done:
	// the program is loaded, the perf events are open, and maps are used
	// through the descriptors we hold.
	if a.cfg.DropPrivileges {
		before, after, err := dropPrivileges()
		switch {
		case errors.Is(err, errCgo):
			a.log.Info("capabilities kept", "reason", err)
		case err != nil:
			a.log.Warn("could not drop capabilities", "err", err)
		default:
			a.log.Debug("capabilities dropped", "effective_before", fmt.Sprintf("%#x", before), "effective_after", fmt.Sprintf("%#x", after))
		}
	}

	expCtx, stopExp := context.WithCancel(context.Background())
	if a.exp != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.exp.Run(expCtx)
		}()
	}
	defer stopExp()

	a.winStart = time.Now().Truncate(a.cfg.Interval)
	a.ready.Store(true)
	a.log.Info("profiling", "cpus", prof.CPUs(), "frequency_hz", a.cfg.Frequency, "interval", a.cfg.Interval,
		"data_dir", a.cfg.DataDir, "pyroscope", a.cfg.PyroscopeURL != "")
	err = prof.Run(ctx, a.onBatch)
	a.ready.Store(false)
	return err
}

// nextDrain drains every second and exactly at each window boundary.
func (a *Agent) nextDrain(prev time.Time) time.Time {
	next := prev.Truncate(time.Second).Add(time.Second)
	if b := prev.Truncate(a.cfg.Interval).Add(a.cfg.Interval); b.Before(next) {
		next = b
	}
	return next
}

func (a *Agent) onBatch(b profiler.Batch) {
	a.m.observeBatch(b)
	for _, s := range b.Samples {
		tg := a.targets.lookup(s.Pid, s.Comm, 0)
		if tg.excluded {
			a.m.excluded.Add(float64(s.Count))
			if a.filter != nil {
				a.filter.sawExcluded(s.Pid)
			}
			continue
		}
		w, ok := a.windows[tg.key]
		if !ok {
			w = &targetWindow{labels: tg.labels, builder: exporter.NewBuilder(a.frames, a.cfg.Frequency, a.winStart)}
			a.windows[tg.key] = w
		}
		w.builder.Add(s)
		if a.store != nil {
			if a.merged == nil {
				a.merged = exporter.NewBuilder(a.frames, a.cfg.Frequency, a.winStart).WithoutProcesses()
			}
			a.merged.AddLabeled(s, tg.key, tg.labels)
		}
		a.frames.Reset() // both builders have named the sample's addresses
	}
	// A drain scheduled at a boundary closes the window; the final drain
	// closes the partial window at the time it happened.
	end := a.winStart.Add(a.cfg.Interval)
	switch {
	case b.Final:
		a.closeWindow(b.Time)
	case !b.Scheduled.Before(end):
		a.closeWindow(end)
	}
}

func (a *Agent) closeWindow(end time.Time) {
	start := a.winStart
	items := make([]store.Item, 0, len(a.windows))
	for _, w := range a.windows {
		p, err := w.builder.Build(end)
		if err != nil {
			a.log.Error("window profile invalid; dropped", "err", err, "service_name", w.labels["service_name"])
			a.m.windowErrors.Inc()
			a.merged = nil // it holds the dropped target's samples
			continue
		}
		a.m.windows.Inc()
		items = append(items, store.Item{Labels: w.labels, Profile: p})
	}
	// One pack for all targets of the window: a few files per window, not
	// two per target (whose creation cost the agent more CPU in the file
	// system than sampling on hosts with process churn).
	if a.store != nil && len(items) > 0 {
		var merged *profile.Profile
		if a.merged != nil && len(items) > 1 {
			var err error
			if merged, err = a.merged.Build(end); err != nil {
				a.log.Error("window profile of all targets invalid; stored without it", "err", err)
				merged = nil
			}
		}
		// PutWindowMerged logs the first failure of each cause itself.
		if err := a.store.PutWindowMerged(start, end.Sub(start), items, merged); err != nil {
			a.m.storeErrors.Inc()
		}
	}
	if a.exp != nil {
		for _, it := range items {
			// The exporter serializes the profile during Enqueue; nothing
			// else uses it afterwards.
			if err := a.exp.Enqueue(pyroscope.Window{Labels: withName(it.Labels), Start: start, Duration: end.Sub(start), Profile: it.Profile}); err != nil {
				a.log.Debug("window not queued", "err", err)
			}
		}
	}
	a.windows = map[string]*targetWindow{}
	a.merged = nil
	a.winStart = end
}

// viewerReturnMemory is how long after the viewer's last request the
// agent hands the memory it freed back to the OS (web.Options.ReturnMemory):
// the agent stays resident for weeks, and should not keep a viewer
// session's peak for minutes after it.
const viewerReturnMemory = 2 * time.Second

func withName(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out["__name__"] = "process_cpu"
	return out
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.m.handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if a.store != nil {
		procs := newWiderProcs()
		mux.Handle("/", procs.wrap(web.NewHandler(a.store, web.Options{Logger: a.log, Loaders: max(procs.wide, 2), ReturnMemory: viewerReturnMemory})))
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "the viewer needs the local store: start the agent with --data-dir", http.StatusNotFound)
		})
	}
	return mux
}
