package agent

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scorch-profiler/scorch/internal/profiler"
	"github.com/scorch-profiler/scorch/internal/sampler"
)

// metrics are the agent's own Prometheus metrics, on a registry of their
// own (so nothing registered globally by a library leaks in). Counters that
// other parts keep (the BPF program's, the symbolizer's, the exporter's) are
// read when scraped.
type metrics struct {
	reg *prometheus.Registry

	mu    sync.Mutex
	stats sampler.Stats // BPF counters as of the last drain

	excluded     prometheus.Counter
	windows      prometheus.Counter
	windowErrors prometheus.Counter
	storeErrors  prometheus.Counter
	drains       prometheus.Counter
	samples      prometheus.Counter
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "scorch"}))
	m.reg.MustRegister(collectors.NewGoCollector())
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "scorch", Name: name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	m.excluded = counter("samples_excluded_total", "Samples of processes left out by --include/--exclude.")
	m.windows = counter("windows_total", "Target windows closed (one profile each).")
	m.windowErrors = counter("window_errors_total", "Target windows dropped because their profile was invalid.")
	m.storeErrors = counter("store_errors_total", "Windows the local store failed to keep (one per interval, whatever its number of targets).")
	m.drains = counter("drains_total", "Drains of the kernel maps.")
	m.samples = counter("samples_drained_total", "Samples read from the kernel maps.")

	// BPF program counters, by outcome and by reason of loss.
	bpfCounter := func(name, help string, labels prometheus.Labels, get func(sampler.Stats) uint64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scorch", Name: name, Help: help, ConstLabels: labels}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(get(m.stats))
		}))
	}
	bpfCounter("bpf_samples_total", "Times the sampling program ran, by outcome.", prometheus.Labels{"outcome": "taken"}, func(s sampler.Stats) uint64 { return s.Samples })
	bpfCounter("bpf_samples_total", "Times the sampling program ran, by outcome.", prometheus.Labels{"outcome": "idle_dropped"}, func(s sampler.Stats) uint64 { return s.IdleDropped })
	// The process filter of --include/--exclude: samples outside the
	// include sets and samples in the exclude sets, both dropped before any
	// stack is taken.
	bpfCounter("bpf_samples_total", "Times the sampling program ran, by outcome.", prometheus.Labels{"outcome": "filtered"}, func(s sampler.Stats) uint64 { return s.Filtered + s.Excluded })
	bpfCounter("lost_total", "Samples or parts of samples the BPF program could not record, by reason.", prometheus.Labels{"reason": "counts_map_full"}, func(s sampler.Stats) uint64 { return s.LostCountsFull })
	bpfCounter("lost_total", "Samples or parts of samples the BPF program could not record, by reason.", prometheus.Labels{"reason": "user_stack_map_full"}, func(s sampler.Stats) uint64 { return s.LostUserStack })
	bpfCounter("lost_total", "Samples or parts of samples the BPF program could not record, by reason.", prometheus.Labels{"reason": "kernel_stack_map_full"}, func(s sampler.Stats) uint64 { return s.LostKernelStack })
	bpfCounter("lost_total", "Samples or parts of samples the BPF program could not record, by reason.", prometheus.Labels{"reason": "pid_event_ring_full"}, func(s sampler.Stats) uint64 { return s.LostPidEvents })
	bpfCounter("lost_total", "Samples or parts of samples the BPF program could not record, by reason.", prometheus.Labels{"reason": "unwound_stack_map_full"}, func(s sampler.Stats) uint64 { return s.LostUnwoundStacks })

	// Stacks that do not pretend: a leaf walked without a table has its
	// caller marked unknown ("[unknown caller]"), by reason.
	callerHelp := "User stacks whose leaf was walked without an unwind table, so that its caller is marked unknown, by reason."
	bpfCounter("unwind_caller_unknown_total", callerHelp, prometheus.Labels{"reason": "no_table"}, func(s sampler.Stats) uint64 { return s.CallerNoTable })
	bpfCounter("unwind_caller_unknown_total", callerHelp, prometheus.Labels{"reason": "table_pending"}, func(s sampler.Stats) uint64 { return s.CallerPending })
	bpfCounter("unwind_caller_unknown_total", callerHelp, prometheus.Labels{"reason": "no_mapping"}, func(s sampler.Stats) uint64 { return s.CallerNoMapping })
	requestHelp := "Files whose unwind tables the kernel asked for, by outcome (lost: the request ring buffer or the file map was full)."
	bpfCounter("unwind_table_requests_total", requestHelp, prometheus.Labels{"outcome": "sent"}, func(s sampler.Stats) uint64 { return s.FileRequests })
	bpfCounter("unwind_table_requests_total", requestHelp, prometheus.Labels{"outcome": "lost"}, func(s sampler.Stats) uint64 { return s.LostFileRequests })
	deferHelp := "Samples whose user stack met code whose unwind table was on the way, by outcome (sent: to user space, which walks them with the table once it is in; lost: the deferred ring buffer was full, kept as the kernel walked them)."
	bpfCounter("unwind_deferred_total", deferHelp, prometheus.Labels{"outcome": "sent"}, func(s sampler.Stats) uint64 { return s.Deferred })
	bpfCounter("unwind_deferred_total", deferHelp, prometheus.Labels{"outcome": "lost"}, func(s sampler.Stats) uint64 { return s.LostDeferred })

	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "scorch", Name: "targets_cached_processes", Help: "Processes whose target (service_name and labels) is cached."},
		func() float64 { return float64(a.targets.size()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "scorch", Name: "tracked_processes", Help: "Processes observed and not yet released."},
		func() float64 { return float64(a.tracked(false)) }))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "scorch", Name: "swept_processes_total", Help: "Exited processes released by the periodic sweep because no exit event came."},
		func() float64 { return float64(a.tracked(true)) }))
	m.reg.MustRegister(&symbolizerCollector{a: a})
	m.reg.MustRegister(&mapCollector{a: a})
	if a.exp != nil {
		m.reg.MustRegister(&exporterCollector{a: a})
	}
	return m
}

func (m *metrics) observeBatch(b profiler.Batch) {
	m.drains.Inc()
	var n uint64
	for _, s := range b.Samples {
		n += s.Count
	}
	m.samples.Add(float64(n))
	m.mu.Lock()
	m.stats = b.Stats
	m.mu.Unlock()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

var (
	uploadDesc      = prometheus.NewDesc("scorch_upload_attempts_total", "Push requests to Pyroscope.", nil, nil)
	uploadRetryDesc = prometheus.NewDesc("scorch_upload_retries_total", "Push requests that repeated a failed one.", nil, nil)
	uploadSentDesc  = prometheus.NewDesc("scorch_upload_windows_sent_total", "Windows acknowledged by Pyroscope.", nil, nil)
	uploadBytesDesc = prometheus.NewDesc("scorch_upload_bytes_total", "Gzipped pprof bytes acknowledged by Pyroscope.", nil, nil)
	uploadFailDesc  = prometheus.NewDesc("scorch_upload_failures_total", "Failed push requests, by cause.", []string{"cause"}, nil)
	uploadDropDesc  = prometheus.NewDesc("scorch_upload_dropped_windows_total", "Windows dropped without being sent, by cause.", []string{"cause"}, nil)
	queueDepthDesc  = prometheus.NewDesc("scorch_upload_queue_windows", "Windows waiting to be sent.", nil, nil)
	queueBytesDesc  = prometheus.NewDesc("scorch_upload_queue_bytes", "Bytes waiting to be sent.", nil, nil)
)

type exporterCollector struct{ a *Agent }

func (c *exporterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{uploadDesc, uploadRetryDesc, uploadSentDesc, uploadBytesDesc, uploadFailDesc, uploadDropDesc, queueDepthDesc, queueBytesDesc} {
		ch <- d
	}
}

func (c *exporterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.exp.Stats()
	ch <- prometheus.MustNewConstMetric(uploadDesc, prometheus.CounterValue, float64(s.Attempts))
	ch <- prometheus.MustNewConstMetric(uploadRetryDesc, prometheus.CounterValue, float64(s.Retries))
	ch <- prometheus.MustNewConstMetric(uploadSentDesc, prometheus.CounterValue, float64(s.Sent))
	ch <- prometheus.MustNewConstMetric(uploadBytesDesc, prometheus.CounterValue, float64(s.SentBytes))
	for cause, n := range s.Failures {
		ch <- prometheus.MustNewConstMetric(uploadFailDesc, prometheus.CounterValue, float64(n), cause)
	}
	for cause, n := range s.Dropped {
		ch <- prometheus.MustNewConstMetric(uploadDropDesc, prometheus.CounterValue, float64(n), cause)
	}
	ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(s.QueueWindows))
	ch <- prometheus.MustNewConstMetric(queueBytesDesc, prometheus.GaugeValue, float64(s.QueueBytes))
}

var (
	symLookupsDesc  = prometheus.NewDesc("scorch_symbolizer_lookups_total", "Addresses resolved.", nil, nil)
	symMissesDesc   = prometheus.NewDesc("scorch_symbolizer_misses_total", "Addresses that could not be named, by reason.", []string{"reason"}, nil)
	symCacheDesc    = prometheus.NewDesc("scorch_symbolizer_cache_bytes", "Bytes held by the symbol table cache.", nil, nil)
	symPanicsDesc   = prometheus.NewDesc("scorch_symbolizer_recovered_panics_total", "Panics while parsing a file, recovered.", nil, nil)
	symParseErrDesc = prometheus.NewDesc("scorch_symbolizer_parse_errors_total", "Malformed maps, kallsyms, perf maps or ELF files met.", nil, nil)
	symProcsDesc    = prometheus.NewDesc("scorch_symbolizer_processes", "Processes whose mappings the symbolizer holds.", nil, nil)
	symFilesDesc    = prometheus.NewDesc("scorch_symbolizer_files", "Open mapped files, shared between processes.", nil, nil)
	mapsReadsDesc   = prometheus.NewDesc("scorch_process_maps_reads_total", "Reads of processes' memory maps asked for by the symbolizer and the unwind-table worker, by how they were answered: read (the file was read) or shared (another user's recent read).", []string{"answer"}, nil)
)

type symbolizerCollector struct{ a *Agent }

var mapBytesDesc = prometheus.NewDesc("scorch_bpf_map_bytes", "Kernel memory of each BPF map now (memlock, charged to the agent's memory cgroup; the hash maps grow and shrink with their entries on Linux 6.1+, the others are preallocated).", []string{"map"}, nil)

// mapCollector reports the BPF maps' kernel memory once sampling runs.
type mapCollector struct{ a *Agent }

func (c *mapCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mapBytesDesc }

func (c *mapCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.a.prof.Load()
	if p == nil {
		return
	}
	for name, n := range p.MapBytes() {
		ch <- prometheus.MustNewConstMetric(mapBytesDesc, prometheus.GaugeValue, float64(n), name)
	}
}

func (c *symbolizerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- symLookupsDesc
	ch <- symMissesDesc
	ch <- symCacheDesc
	ch <- symPanicsDesc
	ch <- symParseErrDesc
	ch <- symProcsDesc
	ch <- symFilesDesc
	ch <- mapsReadsDesc
}

func (c *symbolizerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.sym.Stats()
	ch <- prometheus.MustNewConstMetric(symLookupsDesc, prometheus.CounterValue, float64(s.UserLookups+s.KernelLookups))
	for reason, n := range map[string]uint64{
		"no_mapping": s.MissNoMapping,
		"no_file":    s.MissNoFile,
		"no_symbol":  s.MissNoSymbol,
		"jit":        s.MissJIT,
		"kernel":     s.MissKernel,
	} {
		ch <- prometheus.MustNewConstMetric(symMissesDesc, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(symCacheDesc, prometheus.GaugeValue, float64(s.CacheBytes))
	ch <- prometheus.MustNewConstMetric(symPanicsDesc, prometheus.CounterValue, float64(s.RecoveredPanics))
	ch <- prometheus.MustNewConstMetric(symParseErrDesc, prometheus.CounterValue, float64(s.ParseErrors))
	ch <- prometheus.MustNewConstMetric(symProcsDesc, prometheus.GaugeValue, float64(s.Processes))
	ch <- prometheus.MustNewConstMetric(symFilesDesc, prometheus.GaugeValue, float64(s.Files))
	ch <- prometheus.MustNewConstMetric(mapsReadsDesc, prometheus.CounterValue, float64(s.MapsReads), "read")
	ch <- prometheus.MustNewConstMetric(mapsReadsDesc, prometheus.CounterValue, float64(s.MapsShared), "shared")
}

// tracked is the profiler's count of processes with state (swept: of
// those released by its sweep), 0 before it runs.
func (a *Agent) tracked(swept bool) uint64 {
	p := a.prof.Load()
	if p == nil {
		return 0
	}
	n, s := p.Tracked()
	if swept {
		return s
	}
	return uint64(n)
}
