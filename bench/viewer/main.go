// Command viewer measures how fast the viewer answers on the store of a
// busy host's day (issue 15). Run by bench/run.sh (part "viewer"); by
// hand:
//
//	go run ./bench/viewer -o out.md
//
// It writes -hours (24) of windows of -interval (15 s) for -services (50)
// services through the store's real write path (store.PutWindow: pprof,
// gzip, packs and indexes), each service's profile of a window holding
// -samples (60) samples from its processes of the moment (2 at a time;
// -procs, 3000, distinct pids over the day), their stacks drawn from a
// pool per service over -funcs (3000) function names. It then builds the
// rollups (store.Compact), reopens the store as a restarted agent would,
// and serves it with web.NewHandler on a local HTTP server. For each range
// (the last minute, 15 minutes, hour, 6 hours, day, and no range: all
// time) and each filter (none, one service, one pid of that service, one
// comm), it asks api/flamegraph (pruned as the page asks), api/top,
// api/labels and api/timeline: once on a fresh handler (nothing cached:
// cold) and -warm (3) times more (warm). It reports the latency of each,
// the response sizes, and the process's RSS before serving and at the
// end (the viewer's own memory, with the store's index). With -chromium
// it also loads the page in headless Chromium and times its first render
// (scorchState.ready) for the default view and for the last hour.
//
// Output: a Markdown section on -o, one row per request on -tsv, and the
// targets as "what|goal|measured|ok" lines on -targets.
//
// With -page URL it writes nothing and builds no store: it times the page
// of the viewer already served at URL (an agent's) in -chromium for the
// default view, the last minute and the last 15 minutes, and says how many
// values each filter list holds; bench/run.sh's part churn uses it on the
// agent it measured.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/web"
)

var (
	hours    = flag.Int("hours", 24, "hours of windows to write")
	interval = flag.Duration("interval", 15*time.Second, "window length")
	services = flag.Int("services", 50, "services")
	procs    = flag.Int("procs", 3000, "distinct processes over the whole span")
	samples  = flag.Int("samples", 60, "samples per service and window")
	funcs    = flag.Int("funcs", 3000, "distinct function names")
	warm     = flag.Int("warm", 3, "warm repetitions of each request")
	dir      = flag.String("dir", "", "store directory (default: a temporary one, removed at the end)")
	reuse    = flag.Bool("reuse", false, "serve the store -dir holds, written by an earlier run with the same -hours, -services and -procs, instead of writing one")
	out      = flag.String("o", "", "Markdown section to write (default stdout)")
	tsvPath  = flag.String("tsv", "", "per-request rows to write")
	targets  = flag.String("targets", "", "targets to write, as what|goal|measured|ok lines")
	chromium = flag.String("chromium", "", "headless Chromium to time the page with (none: skip)")
	cpuProf  = flag.String("cpuprofile", "", "write a CPU profile of the serving part (the requests and page loads) to this file")
	heapProf = flag.String("heapprofile", "", "write a heap profile of the serving part to this file at its largest heap (checked every 20 ms)")
	pageURL  = flag.String("page", "", "only time the page of the viewer at this URL in -chromium (no store is built)")
)

// viewerOptions are those of the agent's viewer (internal/agent): it
// returns freed memory to the OS 2 s after the last request.
var viewerOptions = web.Options{ReturnMemory: 2 * time.Second}

func main() {
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("viewer: ")
	if *pageURL != "" {
		if *chromium == "" {
			log.Fatal("-page needs -chromium")
		}
		now := time.Now()
		lines := pageLoads(*pageURL, []view{
			{"default view (all time)", ""},
			{"last minute", fmt.Sprintf("#from=%d&to=%d", now.Add(-time.Minute).UnixMilli(), now.UnixMilli())},
			{"last 15 minutes", fmt.Sprintf("#from=%d&to=%d", now.Add(-15*time.Minute).UnixMilli(), now.UnixMilli())},
		})
		write(*out, strings.Join(lines, ""))
		return
	}
	d := *dir
	if d == "" {
		var err error
		if d, err = os.MkdirTemp("", "scorch-viewer-bench-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
	}
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-time.Duration(*hours) * time.Hour)

	if *reuse {
		if *dir == "" {
			log.Fatal("-reuse needs -dir")
		}
		// The span the earlier run wrote: the hours up to its last
		// window's end.
		st, err := store.Open(d, store.Options{MaxAge: 365 * 24 * time.Hour, MaxBytes: 1 << 40, NoRollups: true})
		if err != nil {
			log.Fatal(err)
		}
		ws, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
		st.Close()
		if err != nil || len(ws) == 0 {
			log.Fatalf("-reuse: no windows in %s (%v)", d, err)
		}
		last := ws[len(ws)-1]
		end = last.Start.Add(last.Duration).UTC()
		start = end.Add(-time.Duration(*hours) * time.Hour)
	}
	g := newGen(start, end)
	var writeTime, compactTime time.Duration
	var sst store.Stats
	nw := 0
	if !*reuse {
		// Write the day, as the agent does, without rollups in the way.
		st, err := store.Open(d, store.Options{MaxAge: 8 * 24 * time.Hour, MaxBytes: 1 << 40, NoRollups: true})
		if err != nil {
			log.Fatal(err)
		}
		t0 := time.Now()
		for w := start; w.Before(end); w = w.Add(*interval) {
			items := g.window(w)
			if err := st.PutWindowMerged(w, *interval, items, mergeTargets(items)); err != nil {
				log.Fatal(err)
			}
			nw++
		}
		writeTime = time.Since(t0)
		t0 = time.Now()
		if err := st.Compact(context.Background()); err != nil {
			log.Fatal(err)
		}
		compactTime = time.Since(t0)
		sst = st.Stats()
		st.Close()
		log.Printf("wrote %d windows of %d services in %v, rollups in %v: %+v", nw, *services, writeTime.Round(time.Millisecond), compactTime.Round(time.Millisecond), sst)
	}

	// Serve it as a restarted agent would, with its collector's setting
	// (cmd/scorch: GOGC=50 unless GOGC is set).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	debug.FreeOSMemory()
	rss0 := rssMB()
	t0 := time.Now()
	st, err := store.Open(d, store.Options{MaxAge: 8 * 24 * time.Hour, MaxBytes: 1 << 40})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	openTime := time.Since(t0)
	if *reuse {
		sst = st.Stats()
		nw = int(end.Sub(start) / *interval)
	}
	debug.FreeOSMemory()
	rss1 := rssMB()
	// The peak from here on (VmHWM), not that of writing the store.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		log.Printf("resetting the peak RSS: %v (the peak includes writing the store)", err)
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}

	if *heapProf != "" {
		stop := watchHeap(*heapProf)
		defer stop()
	}

	si := min(7, *services-1)
	svc := g.names[si]
	pid := g.pidAt(si, end.Add(-10*time.Minute))
	type rng struct {
		name     string
		from, to time.Time
	}
	ranges := []rng{
		{"last minute", end.Add(-time.Minute), end},
		{"last 15 min", end.Add(-15 * time.Minute), end},
		{"last hour", end.Add(-time.Hour), end},
		{"last 6 h", end.Add(-6 * time.Hour), end},
		{"last 24 h", start, end},
		{"all time (no range)", time.Time{}, time.Time{}},
	}
	filters := []struct{ name, query string }{
		{"none", ""},
		{"service", "service=" + url.QueryEscape(svc)},
		{"pid", "pid=" + strconv.Itoa(pid)},
		{"comm", "comm=" + url.QueryEscape(svc+"-worker")},
	}
	apis := []struct{ name, path string }{
		// As the page asks on a 1600 px wide flame graph (app.js:
		// MAX_NODES, minWidth: half a pixel at 2x zoom).
		{"flamegraph", "api/flamegraph?maxnodes=5000&minwidth=0.00016"},
		{"top", "api/top?limit=300"},
		{"labels", "api/labels?x=1"},
		{"timeline", "api/timeline?x=1"},
	}
	var rows []row
	var tsv strings.Builder
	tsv.WriteString("range\tfilter\tapi\tcold_ms\twarm_median_ms\tbytes\tstatus\n")
	peak := rss1
	for _, r := range ranges {
		for _, f := range filters {
			srv := httptest.NewServer(web.NewHandler(st, viewerOptions)) // cold: nothing cached
			for _, a := range apis {
				q := a.path
				if f.query != "" {
					q += "&" + f.query
				}
				if !r.from.IsZero() {
					q += fmt.Sprintf("&from=%d&to=%d", r.from.UnixMilli(), r.to.UnixMilli())
				}
				cold, size, status := get(srv.URL + "/" + q)
				var ws []float64
				for range *warm {
					ms, _, _ := get(srv.URL + "/" + q)
					ws = append(ws, ms)
				}
				wm := median(ws)
				log.Printf("%s %s %s: cold %.0f ms, warm %.0f ms, %d bytes, status %d, RSS %.0f MB", r.name, f.name, a.name, cold, wm, size, status, rssMB())
				rows = append(rows, row{r.name, f.name, a.name, cold, wm, size, status})
				fmt.Fprintf(&tsv, "%s\t%s\t%s\t%.1f\t%.1f\t%d\t%d\n", r.name, f.name, a.name, cold, wm, size, status)
			}
			srv.Close()
			peak = max(peak, rssMB())
		}
	}
	var page []string
	if *chromium != "" {
		srv := httptest.NewServer(web.NewHandler(st, viewerOptions))
		page = pageLoads(srv.URL, []view{
			{"default view (all time)", ""},
			{"last hour", fmt.Sprintf("#from=%d&to=%d", end.Add(-time.Hour).UnixMilli(), end.UnixMilli())},
			{"last hour, one service", fmt.Sprintf("#from=%d&to=%d&service=service-00", end.Add(-time.Hour).UnixMilli(), end.UnixMilli())},
		})
		srv.Close()
	}
	time.Sleep(viewerOptions.ReturnMemory + time.Second)
	rss2 := rssMB()
	peak = max(peak, statusMB("VmHWM:"))

	// Report.
	var all, colds []float64
	var bad []string
	maxSize := 0
	for _, r := range rows {
		if r.status != 200 {
			bad = append(bad, fmt.Sprintf("%s %s %s: %d", r.rng, r.filter, r.api, r.status))
			continue
		}
		all = append(all, r.cold)
		colds = append(colds, r.cold)
		for range *warm {
			all = append(all, r.warm)
		}
		if r.api == "flamegraph" {
			maxSize = max(maxSize, r.size)
		}
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## Viewer latency\n\n")
	fmt.Fprintf(&md, "`go run ./bench/viewer` (bench/run.sh part `viewer`): %d h of %v windows for %d services, %d samples per service and window, %d distinct processes (2 per service at a time), stacks over %d function names, written through `store.PutWindowMerged` as the agent writes them, with the merge of each window's targets (%d windows in %v; the rollups built by `store.Compact` in %v: %d windows, %d merges and %d rollups, %.0f MiB on disk). The store is then reopened (%v, as a restarted agent) and served by `web.NewHandler` with the agent's options on a local HTTP server; each request is made once on a fresh handler (cold: nothing cached) and %d times more (warm, median). Ranges end at the last window's end; filters: a service, one pid of it, one comm. Process RSS: %.0f MB before opening the store, %.0f MB after, %.0f MB at the end (%v after the last request), peak while serving %.0f MB (VmHWM).\n\n",
		*hours, *interval, *services, *samples, g.distinctPids(), *funcs, nw, writeTime.Round(time.Second), compactTime.Round(time.Second), sst.Windows, sst.Merged, sst.Rollups, float64(sst.Bytes)/(1<<20), openTime.Round(time.Millisecond), *warm, rss0, rss1, rss2, viewerOptions.ReturnMemory+time.Second, peak)
	if *reuse {
		fmt.Fprintf(&md, "The store was written by an earlier run (`-reuse`): the times of writing and compacting it above are not this run's.\n\n")
	}
	fmt.Fprintf(&md, "| range | filter | flamegraph cold / warm ms | top cold / warm ms | labels cold / warm ms | timeline cold / warm ms | flamegraph bytes |\n|---|---|---:|---:|---:|---:|---:|\n")
	for i := 0; i+len(apis) <= len(rows); i += len(apis) {
		r := rows[i : i+len(apis)]
		cell := func(x row) string {
			if x.status != 200 {
				return fmt.Sprintf("HTTP %d", x.status)
			}
			return fmt.Sprintf("%.0f / %.0f", x.cold, x.warm)
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %s | %s | %s | %d |\n", r[0].rng, r[0].filter, cell(r[0]), cell(r[1]), cell(r[2]), cell(r[3]), r[0].size)
	}
	fmt.Fprintf(&md, "\nAll %d answered requests: median %.0f ms, p99 %.0f ms; cold ones: median %.0f ms, p99 %.0f ms. Refused or failed: %d%s.\n",
		len(all), median(all), pct(all, 0.99), median(colds), pct(colds, 0.99), len(bad), list(bad))
	for _, p := range page {
		fmt.Fprintf(&md, "\n%s", p)
	}
	if len(page) > 0 {
		md.WriteString("\n")
	}
	write(*out, md.String())
	write(*tsvPath, tsv.String())
	if *targets != "" {
		var tg strings.Builder
		ok := func(b bool) string { return map[bool]string{true: "met", false: "missed"}[b] }
		fmt.Fprintf(&tg, "viewer latency, median of all requests (%d h, %d services)|≤ 1 s|%.0f ms|%s\n", *hours, *services, median(all), ok(median(all) <= 1000 && len(bad) == 0))
		fmt.Fprintf(&tg, "viewer latency, p99 of all requests|≤ 3 s|%.0f ms|%s\n", pct(all, 0.99), ok(pct(all, 0.99) <= 3000 && len(bad) == 0))
		fmt.Fprintf(&tg, "viewer flame graph response size, largest|typically ≤ 200 KB|%d KB|%s\n", maxSize/1000, ok(maxSize <= 200_000))
		fmt.Fprintf(&tg, "viewer memory: RSS added by serving|≤ 40 MB|%+.0f MB after serving (peak %+.0f)|%s\n", rss2-rss1, peak-rss1, ok(peak-rss1 <= 40))
		write(*targets, tg.String())
	}
}

type row struct {
	rng, filter, api string
	cold, warm       float64
	size, status     int
}

func list(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return " (" + strings.Join(s, "; ") + ")"
}

func write(path, s string) {
	if path == "" {
		fmt.Print(s)
		return
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		log.Fatal(err)
	}
}

// get fetches url and returns its latency in ms, its size and status.
func get(u string) (float64, int, int) {
	t0 := time.Now()
	resp, err := http.Get(u)
	if err != nil {
		log.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return float64(time.Since(t0).Microseconds()) / 1000, int(n), resp.StatusCode
}

func median(v []float64) float64 { return pct(v, 0.5) }

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// rssMB is this process's resident set, from /proc/self/status.
func rssMB() float64 {
	runtime.GC()
	return statusMB("VmRSS:")
}

// statusMB reads a field of /proc/self/status in kB, as MB.
func statusMB(field string) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return kb / 1024
		}
	}
	return 0
}

// gen makes the windows of a host: services with two processes at a
// time, each living a fixed span, stacks from a pool per service.
type gen struct {
	start, end time.Time
	names      []string
	life       time.Duration // of a process
	stacks     [][][]string  // per service: stacks, root first
	fns        []*profile.Function
	addr       map[string]uint64 // of each function's one location
	rnd        *rand.Rand
}

func newGen(start, end time.Time) *gen {
	g := &gen{start: start, end: end, addr: map[string]uint64{}, rnd: rand.New(rand.NewPCG(1, 2))}
	g.addr["runtime.main"], g.addr["main.main"] = 0x401000, 0x401010
	perService := max(2, *procs / *services)
	g.life = 2 * end.Sub(start) / time.Duration(perService) // two alive at a time
	for i := range *funcs {
		name := fmt.Sprintf("pkg%d.Func%d", i%97, i)
		g.fns = append(g.fns, &profile.Function{ID: uint64(i + 1), Name: name, SystemName: name, Filename: fmt.Sprintf("src/pkg%d/f.go", i%97)})
		g.addr[name] = 0x402000 + 16*uint64(i)
	}
	for s := range *services {
		g.names = append(g.names, fmt.Sprintf("service-%02d", s))
		var pool [][]string
		for range 40 {
			depth := 8 + g.rnd.IntN(17)
			st := []string{"runtime.main", "main.main"}
			for range depth {
				st = append(st, g.fns[g.rnd.IntN(len(g.fns))].Name)
			}
			pool = append(pool, st)
		}
		g.stacks = append(g.stacks, pool)
	}
	return g
}

// pidAt is the pid of one of service s's processes alive at t.
func (g *gen) pidAt(s int, t time.Time) int {
	gen := int(t.Sub(g.start) / (g.life / 2))
	return 1000 + s*100000 + gen
}

func (g *gen) distinctPids() int {
	return *services * (int(g.end.Sub(g.start)/(g.life/2)) + 1)
}

// window returns the services' profiles of the window starting at w.
// mergeTargets is the profile of all targets the agent writes beside
// them (store.PutWindowMerged), built as the agent builds it
// (exporter.Builder.WithoutProcesses): their samples labelled with their
// targets' labels, without pid and tid, so that the same stack of a
// service's processes is one sample. Each service has its own binary
// here: the targets share no location.
func mergeTargets(items []store.Item) *profile.Profile {
	m := &profile.Profile{}
	type sampleKey struct {
		item int
		comm string
		locs string
	}
	merged := map[sampleKey]*profile.Sample{}
	for i, it := range items {
		p := it.Profile
		if i == 0 {
			m.SampleType, m.PeriodType, m.Period = p.SampleType, p.PeriodType, p.Period
			m.TimeNanos, m.DurationNanos = p.TimeNanos, p.DurationNanos
		}
		maps := map[*profile.Mapping]*profile.Mapping{}
		for _, pm := range p.Mapping {
			c := *pm
			c.ID = uint64(len(m.Mapping) + 1)
			maps[pm] = &c
			m.Mapping = append(m.Mapping, &c)
		}
		funcs := map[*profile.Function]*profile.Function{}
		for _, f := range p.Function {
			c := *f
			c.ID = uint64(len(m.Function) + 1)
			funcs[f] = &c
			m.Function = append(m.Function, &c)
		}
		locs := map[*profile.Location]*profile.Location{}
		for _, l := range p.Location {
			c := *l
			c.ID = uint64(len(m.Location) + 1)
			c.Mapping = maps[l.Mapping]
			c.Line = make([]profile.Line, len(l.Line))
			for k, ln := range l.Line {
				c.Line[k] = ln
				c.Line[k].Function = funcs[ln.Function]
			}
			locs[l] = &c
			m.Location = append(m.Location, &c)
		}
		for _, smp := range p.Sample {
			var key strings.Builder
			ls := make([]*profile.Location, len(smp.Location))
			for k, l := range smp.Location {
				ls[k] = locs[l]
				fmt.Fprintf(&key, "%d,", ls[k].ID)
			}
			comm := ""
			if c := smp.Label["comm"]; len(c) > 0 {
				comm = c[0]
			}
			sk := sampleKey{i, comm, key.String()}
			if ms := merged[sk]; ms != nil {
				for k := range ms.Value {
					ms.Value[k] += smp.Value[k]
				}
				continue
			}
			ms := &profile.Sample{Location: ls, Value: slices.Clone(smp.Value), Label: map[string][]string{"comm": {comm}}}
			for k, v := range it.Labels {
				ms.Label[k] = []string{v}
			}
			merged[sk] = ms
			m.Sample = append(m.Sample, ms)
		}
	}
	if err := m.CheckValid(); err != nil {
		log.Fatal(err)
	}
	return m
}

func (g *gen) window(w time.Time) []store.Item {
	items := make([]store.Item, 0, len(g.names))
	for s, name := range g.names {
		p := &profile.Profile{
			SampleType:    []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}, {Type: "samples", Unit: "count"}},
			PeriodType:    &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
			Period:        10_101_010,
			TimeNanos:     w.UnixNano(),
			DurationNanos: int64(*interval),
		}
		mapping := &profile.Mapping{ID: 1, Start: 0x400000, Limit: 0x400000 + 0x100000 + uint64(16**funcs), File: "/usr/bin/" + name, HasFunctions: true}
		p.Mapping = []*profile.Mapping{mapping}
		funcs := map[string]*profile.Function{}
		locs := map[string]*profile.Location{}
		loc := func(fn string) *profile.Location {
			if l := locs[fn]; l != nil {
				return l
			}
			f := funcs[fn]
			if f == nil {
				f = &profile.Function{ID: uint64(len(p.Function) + 1), Name: fn, SystemName: fn, Filename: "f.go"}
				funcs[fn] = f
				p.Function = append(p.Function, f)
			}
			// One address per function, the same in every window, as a
			// binary's code has (pprof merges locations by address).
			l := &profile.Location{ID: uint64(len(p.Location) + 1), Mapping: mapping, Address: g.addr[fn], Line: []profile.Line{{Function: f, Line: 1}}}
			locs[fn] = l
			p.Location = append(p.Location, l)
			return l
		}
		pids := []int{g.pidAt(s, w), g.pidAt(s, w.Add(-g.life/2))}
		type key struct{ stack, pid int }
		counts := map[key]int64{}
		for range *samples {
			counts[key{g.rnd.IntN(len(g.stacks[s])), pids[g.rnd.IntN(2)]}]++
		}
		keys := slices.SortedFunc(func(yield func(key) bool) {
			for k := range counts {
				if !yield(k) {
					return
				}
			}
		}, func(a, b key) int {
			if a.stack != b.stack {
				return a.stack - b.stack
			}
			return a.pid - b.pid
		})
		for _, k := range keys {
			st := g.stacks[s][k.stack]
			var ls []*profile.Location
			for i := len(st) - 1; i >= 0; i-- { // leaf first
				ls = append(ls, loc(st[i]))
			}
			n := counts[k]
			p.Sample = append(p.Sample, &profile.Sample{
				Location: ls,
				Value:    []int64{n * p.Period, n},
				Label:    map[string][]string{"comm": {name + "-worker"}},
				NumLabel: map[string][]int64{"pid": {int64(k.pid)}, "tid": {int64(k.pid)}},
			})
		}
		items = append(items, store.Item{Labels: map[string]string{"service_name": name, "hostname": "bench-host"}, Profile: p})
	}
	return items
}

// pageLoads times the page's first render in headless Chromium.
// view is a page address's fragment to time, and its name.
type view struct{ name, hash string }

// pageLoads times, in headless Chromium, each view of the viewer at base
// from navigation to its first render, and counts the values of its
// filter lists then.
func pageLoads(base string, views []view) []string {
	udd, err := os.MkdirTemp("", "scorch-viewer-chromium-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(udd)
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(*chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(udd), chromedp.WindowSize(1400, 1000))
	defer cancel()
	var out []string
	for _, v := range views {
		ctx, cancel := chromedp.NewContext(actx)
		ctx, cancel2 := context.WithTimeout(ctx, 120*time.Second)
		// The browser and the view's tab are started before the clock
		// starts: a user's browser is running when they open the viewer.
		// (Until 2026-12-03 the first view's time held Chromium's start,
		// and every view's its tab's.)
		err := chromedp.Do(ctx)
		t0 := time.Now()
		if err == nil {
			err = chromedp.Do(ctx, chromedp.Navigate(strings.TrimSuffix(base, "/")+"/"+v.hash))
		}
		if err == nil {
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](`window.scorchState && scorchState.ready && scorchState.loading === 0`, chromedp.WithPollingTimeout(110*time.Second)))
		}
		ms := time.Since(t0).Milliseconds()
		status, lists, requests, js := "", "", "", ""
		var msLists int64
		if err == nil {
			status, err = chromedp.Run(ctx, chromedp.Evaluate[string](`scorchState.error`))
		}
		if err == nil {
			js, err = chromedp.Run(ctx, chromedp.Evaluate[string](`'graph requests and tree ' + Math.round(scorchState.loadMs) + ' ms, drawing ' + Math.round(scorchState.drawMs) + ' ms, ready at ' + Math.round(scorchState.readyAt) + ' ms'`))
		}
		if err == nil {
			// The lists are filled by their own request, asked for once
			// the graph is drawn: wait for it.
			_, err = chromedp.Run(ctx, chromedp.Poll[bool](`scorchState.labelsGen > 0`, chromedp.WithPollingTimeout(60*time.Second)))
			msLists = time.Since(t0).Milliseconds()
		}
		if err == nil {
			lists, err = chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('[data-filter]')).map((s) => s.dataset.filter + ' ' + (s.options.length - 1)).join(', ')`))
		}
		if err == nil {
			// Where the time went: each request's start and end, in ms
			// from navigation, as the page saw them.
			requests, err = chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map((e) => e.name.replace(/^.*\/\/[^/]*\//, '/').replace(/\?.*$/, '') + ' ' + Math.round(e.startTime) + '-' + Math.round(e.responseEnd)).join(', ')`))
		}
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("Chromium, %s: failed after %d ms: %v\n", v.name, ms, err))
		case status != "":
			out = append(out, fmt.Sprintf("Chromium, %s: %d ms to the first render, with the error %q\n", v.name, ms, status))
		default:
			out = append(out, fmt.Sprintf("Chromium, %s: %d ms from navigation to the first render (flame graph and top table), %d ms until the filter lists are filled; values in the filter lists: %s. In the page: %s. Requests (ms from navigation): %s.\n", v.name, ms, msLists, lists, js, requests))
		}
		cancel2()
		cancel()
	}
	return out
}

// watchHeap writes a heap profile to path whenever the heap in use grows a
// tenth past the largest seen, checking every 20 ms, until stop: the
// profile is that of the serving part's largest heap, what its peak RSS
// comes from.
func watchHeap(path string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var most uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse < most+most/10 {
				continue
			}
			most = ms.HeapInuse
			f, err := os.Create(path)
			if err != nil {
				log.Printf("heap profile: %v", err)
				return
			}
			if err := pprof.WriteHeapProfile(f); err != nil {
				log.Printf("heap profile: %v", err)
			}
			f.Close()
			log.Printf("heap profile: %.0f MB in use", float64(most)/1e6)
		}
	}()
	return func() { close(done); <-finished }
}
