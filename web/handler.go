package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/pprof/profile"
)

//go:embed static
var static embed.FS

// Options configures the handler. The zero value is usable.
type Options struct {
	// Title is shown in the page header. Default "Scorch".
	Title string
	// CacheProfiles bounds how many decoded window profiles are kept in
	// memory between requests. Default 64.
	CacheProfiles int
	// CacheBytes bounds the memory of those profiles, as estimated from
	// their samples, locations and functions (the newest is kept
	// whatever its size). Default 16 MiB.
	CacheBytes int64
	// MaxWindows bounds how many windows one request may open; a wider
	// selection is refused with 400. Default 5000.
	MaxWindows int
	// FewWindows is how many windows a request opens before the viewer
	// reads a coarser level of a LeveledSource (about a second's work at
	// a few milliseconds a window; in a list of merges of all targets,
	// each window counts by its size, windowCost). Default 256.
	FewWindows int
	// MaxBuckets bounds the timeline's buckets. Default 10000.
	MaxBuckets int
	// Loaders is how many goroutines read and prepare the windows of
	// one request. Default the CPUs Go uses, at least 2 and at most 4.
	Loaders int
	// Logger receives errors that are not the client's fault. Default
	// slog.Default().
	Logger *slog.Logger
	// ReturnMemory, if positive, is how long after the last request
	// ends (none other in flight) the handler returns the memory that
	// requests freed to the operating system (debug.FreeOSMemory). A
	// request over a long range reads and drops tens of megabytes of
	// profiles, which the Go runtime would otherwise hand back only over
	// minutes: in a host agent that stays resident. It costs one garbage
	// collection per burst of requests. Default 0: left to the runtime.
	ReturnMemory time.Duration
}

// costBytes is the stored size of a typical target's window (about 15 KB
// in a 2-hour store of 50 services), the unit windowCost counts in.
const costBytes = 16 << 10

// mergedCost is what a window of unknown size (Window.Bytes 0) counts in
// a list of merges of all targets.
const mergedCost = 4

// windowCost is what reading w counts against Options.FewWindows in a list
// of merges of all targets (LeveledSource.MergedAt): as many windows as
// its stored size holds typical ones. A merge holds the samples of every
// target of its window: a host of 50 equal services makes merges of
// 30-odd times a target's window, where the merges of a churning host's
// few busy services are a few times one. Counted as one each (or 4), 60
// merges of the first kind made the last 15 minutes a second and a half
// to read cold, against 150 ms from the 5-minute rollups.
func windowCost(w Window) int {
	if w.Bytes <= 0 {
		return mergedCost
	}
	return int(max(1, (w.Bytes+costBytes-1)/costBytes))
}

type handler struct {
	src   Source
	opts  Options
	cache *cache
	trees *trees // the last trees built, shared by a view's requests
	log   *slog.Logger
}

// NewHandler returns an http.Handler serving the viewer page at "/" and
// its JSON API under "/api/" (see the package documentation), reading
// profiles from src. The page uses relative URLs, so the handler can be
// mounted under a prefix with http.StripPrefix.
func NewHandler(src Source, opts Options) http.Handler {
	if opts.Title == "" {
		opts.Title = "Scorch"
	}
	if opts.CacheProfiles <= 0 {
		opts.CacheProfiles = 64
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 16 << 20
	}
	if opts.MaxWindows <= 0 {
		opts.MaxWindows = 5000
	}
	if opts.FewWindows <= 0 {
		opts.FewWindows = 256
	}
	if opts.MaxBuckets <= 0 {
		opts.MaxBuckets = 10000
	}
	if opts.Loaders <= 0 {
		// At least two: one reads a window while another parses.
		opts.Loaders = max(min(runtime.GOMAXPROCS(0), 4), 2)
	}
	h := &handler{src: src, opts: opts, cache: newCache(opts.CacheProfiles, opts.CacheBytes), trees: &trees{max: maxTrees, maxBytes: maxTreeBytes}, log: opts.Logger}
	if h.log == nil {
		h.log = slog.Default()
	}
	mux := http.NewServeMux()
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/info", h.serve(h.info))
	mux.HandleFunc("GET /api/timeline", h.serve(h.timeline))
	mux.HandleFunc("GET /api/flamegraph", h.serve(h.flamegraph))
	mux.HandleFunc("GET /api/diff", h.serve(h.diff))
	mux.HandleFunc("GET /api/top", h.serve(h.top))
	mux.HandleFunc("GET /api/search", h.serve(h.search))
	mux.HandleFunc("GET /api/sandwich", h.serve(h.sandwich))
	mux.HandleFunc("GET /api/labels", h.serve(h.labels))
	mux.HandleFunc("GET /api/profile.pb.gz", h.serve(h.profile))
	if opts.ReturnMemory > 0 {
		return &returner{next: mux, after: opts.ReturnMemory}
	}
	return mux
}

// returner serves next and returns freed memory to the operating system
// once no request has been in flight for a while (Options.ReturnMemory).
type returner struct {
	next  http.Handler
	after time.Duration

	mu       sync.Mutex
	inFlight int
	timer    *time.Timer
}

func (r *returner) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.inFlight++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.inFlight--; r.inFlight > 0 {
			return
		}
		if r.timer == nil {
			r.timer = time.AfterFunc(r.after, r.release)
		} else {
			r.timer.Reset(r.after)
		}
	}()
	r.next.ServeHTTP(w, req)
}

func (r *returner) release() {
	r.mu.Lock()
	idle := r.inFlight == 0
	r.mu.Unlock()
	if idle {
		debug.FreeOSMemory()
	}
}

// serve adapts an endpoint: it writes the body or maps the error to a
// status, 400 for bad parameters.
func (h *handler) serve(f func(r *http.Request) (body []byte, ctype string, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ctype, err := f(r)
		if err != nil {
			var br *badRequest
			switch {
			case errors.As(err, &br):
				http.Error(w, br.msg, http.StatusBadRequest)
			case errors.Is(err, errNoSamples):
				http.Error(w, err.Error(), http.StatusNotFound)
			case r.Context().Err() != nil:
				// The client went away.
			default:
				h.log.Error("web: request failed", "path", r.URL.Path, "query", r.URL.RawQuery, "err", err)
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Cache-Control", "no-store")
		w.Write(body)
	}
}

var errNoSamples = errors.New("no samples in the selection")

func jsonBody(v any) ([]byte, string, error) {
	b, err := json.Marshal(v)
	return b, "application/json", err
}

// selected is one window that passed the window-label filters, with the
// filters left to check on its samples.
type selected struct {
	w    Window
	rest []filter
}

// listWindows lists the windows of q's range at the finest level where
// the windows a request must open, need(ws) of them, are few (FewWindows),
// else at the finest where they fit MaxWindows, else at the coarsest (see
// LeveledSource; a Source without rollups has level 0 only), searching
// from the coarsest, since a finer level has as many windows or more to
// open. Levels whose period is at most res are taken as fine enough: the
// search goes no finer than the coarsest of them (a timeline of 15-minute
// buckets reads 5-minute rollups, not the day's 300,000 windows). It
// returns the period of the level used, 0 for the windows as recorded. Without filters, merged lists
// the merges of all targets where the source has them (MergedAt), at
// level 0 too: fewer profiles, the same samples. A merge holds every
// target's samples, so such lists count each window by its size
// (windowCost) against FewWindows, and where no level has few, the level
// that counts least is read. With filtered, only the windows q's filters
// do not rule out by window label are listed (by the source, if it is a
// FilteringSource), and need counts among them.
func (h *handler) listWindows(ctx context.Context, q *query, need func([]Window) int, merged, filtered bool, res time.Duration) ([]Window, time.Duration, error) {
	ls, ok := h.src.(LeveledSource)
	merged = ok && merged && len(q.filters) == 0
	if merged {
		opens := need
		need = func(ws []Window) int {
			opens(ws) // every window, without filters
			n := 0
			for _, w := range ws {
				n += windowCost(w)
			}
			return n
		}
	}
	periods := []time.Duration{0}
	if ok {
		periods = append(periods, ls.Levels()...)
	}
	var keep func(*Window) bool
	if filtered && len(q.filters) > 0 {
		keep = q.windowPasses
	}
	at := func(ctx context.Context, from, to time.Time, k int) ([]Window, error) {
		if fs, ok := h.src.(FilteringSource); ok && keep != nil {
			return fs.WindowsWhere(ctx, from, to, k, merged, keep)
		}
		var ws []Window
		var err error
		switch {
		case merged:
			ws, err = ls.MergedAt(ctx, from, to, k) // fewer windows, the same periods
		case k == 0:
			ws, err = h.src.Windows(ctx, from, to)
		default:
			ws, err = ls.WindowsAt(ctx, from, to, k)
		}
		if keep != nil {
			ws = slices.DeleteFunc(ws, func(w Window) bool { return !keep(&w) })
		}
		return ws, err
	}
	start := 0
	for k, d := range periods {
		if k > 0 && d <= res {
			start = k
		}
	}
	type level struct {
		ws  []Window
		res time.Duration
		n   int
	}
	list := func(k int) (*level, error) {
		ws, err := at(ctx, q.from, q.to, k)
		if err != nil {
			return nil, fmt.Errorf("listing windows: %w", err)
		}
		return &level{ws, periods[k], need(ws)}, nil
	}
	if !merged {
		// A finer level has as many windows to open or more: search from
		// the coarsest, so that a level finer than the answer is never
		// listed (a day's list at level 0 is some 300,000 windows, of
		// which a filter may keep a few hundred).
		var few *level // the finest level listed yet with few
		for k := len(periods) - 1; k >= start; k-- {
			l, err := list(k)
			if err != nil {
				return nil, 0, err
			}
			if l.n <= h.opts.FewWindows {
				few = l
				continue
			}
			if few != nil {
				return few.ws, few.res, nil
			}
			// None has few: the finest within MaxWindows, else this,
			// the coarsest.
			best := l
			for k--; k >= start && best.n <= h.opts.MaxWindows; k-- {
				fl, err := list(k)
				if err != nil {
					return nil, 0, err
				}
				if fl.n > h.opts.MaxWindows {
					break
				}
				best = fl
			}
			return best.ws, best.res, nil
		}
		return few.ws, few.res, nil
	}
	// Merges are few (one a window or period) but weigh by size: the
	// finest level with few, else the one that weighs least (of equals,
	// the finest). A finer level weighs as much or more, short of a
	// rollup of all targets that failed: the search goes from the
	// coarsest and stops at the first level that weighs more than one
	// coarser, so that a day's range does not list its windows (a
	// day's level 0 is some 300,000 of them, behind 5,760 merges).
	var few, least *level
	for k := len(periods) - 1; k >= start; k-- {
		l, err := list(k)
		if err != nil {
			return nil, 0, err
		}
		if l.n <= h.opts.FewWindows {
			few = l
			continue
		}
		if few != nil || least != nil && l.n > least.n {
			break
		}
		least = l
	}
	if few != nil {
		return few.ws, few.res, nil
	}
	return least.ws, least.res, nil
}

// span returns the span of every stored window, as the finest level of
// rollups shows it where the source has levels (a day at level 0 is some
// 300,000 windows; the rollups widen the span to their periods).
func (h *handler) span(ctx context.Context) (span, error) {
	var sp span
	var ws []Window
	var err error
	if ls, ok := h.src.(LeveledSource); ok && len(ls.Levels()) > 0 {
		ws, err = ls.MergedAt(ctx, allFrom, allTo, 1)
	} else {
		ws, err = h.src.Windows(ctx, allFrom, allTo)
	}
	if err != nil {
		return sp, fmt.Errorf("listing windows: %w", err)
	}
	for _, w := range ws {
		sp.add(w)
	}
	return sp, nil
}

// selectWindows lists the windows of q's range that its filters do not
// rule out by window label, and the period of their level (listWindows).
func (h *handler) selectWindows(ctx context.Context, q *query) ([]selected, time.Duration, error) {
	var sel []selected
	pick := func(ws []Window) int {
		sel = sel[:0]
		for _, w := range ws {
			if ok, rest := q.windowFilters(w); ok {
				sel = append(sel, selected{w, rest})
			}
		}
		return len(sel)
	}
	// Merges of all targets need not keep pids (the agent's do not): a
	// tree grouped by pid reads the targets'.
	ws, res, err := h.listWindows(ctx, q, pick, q.group != "pid", true, 0)
	if err != nil {
		return nil, 0, err
	}
	pick(ws)
	return sel, res, nil
}

const (
	// maxLabelOpens is how many windows /api/labels opens, newest first,
	// for labels with more values in a window than the source lists.
	maxLabelOpens = 16
	// maxLabelValues is how many values /api/labels lists per label, those
	// with the most samples: a list of thousands of pids is no use to
	// pick from, and costs the page seconds to build.
	maxLabelValues = 2000
)

func (h *handler) checkOpen(n int) error {
	if n > h.opts.MaxWindows {
		return badf("selection covers %d windows, more than the limit of %d: narrow the time range or filter", n, h.opts.MaxWindows)
	}
	return nil
}

// span is the time covered by a set of windows, and the period of their
// level (0: the windows as recorded; see listWindows).
type span struct {
	from, to time.Time
	res      time.Duration
}

func (s *span) add(w Window) {
	end := w.Start.Add(w.Duration)
	if s.from.IsZero() || w.Start.Before(s.from) {
		s.from = w.Start
	}
	if end.After(s.to) {
		s.to = end
	}
}

// collect merges the samples q selects into column col of t.
func (h *handler) collect(ctx context.Context, q *query, t *tree, col int) (span, int, error) {
	sel, res, err := h.selectWindows(ctx, q)
	if err != nil {
		return span{}, 0, err
	}
	return h.addWindows(ctx, sel, res, t, col)
}

// singleTree returns the tree of one range, q's: the one a recent request
// built from the same windows and filters (see trees), else a new one.
func (h *handler) singleTree(ctx context.Context, q *query) (*tree, span, int, error) {
	sel, res, err := h.selectWindows(ctx, q)
	if err != nil {
		return nil, span{}, 0, err
	}
	return h.trees.get(ctx, treeKey(q.focus, q.group, sel), func() (*tree, span, int, error) {
		t := newTree(q.focus, q.group)
		sp, n, err := h.addWindows(ctx, sel, res, t, 0)
		return t, sp, n, err
	})
}

// loadBudget bounds what the loaders of one request hold at once: the
// windows claimed and not yet taken by the caller, at most 2 per loader,
// and their stored bytes (Window.Bytes, compressed), at most
// loadBudgetBytes. A profile takes some tens of times its stored size once
// decoded: a rollup of an hour of a busy host is megabytes stored, and
// several decoded side by side made the viewer's peak. A window larger
// than the budget is loaded alone.
const loadBudgetBytes = 2 << 20

// loadWeight is what window w counts against loadBudgetBytes.
func loadWeight(w *Window) int64 {
	return min(max(w.Bytes, costBytes), loadBudgetBytes)
}

// load reads, parses and prepares the windows of sel (through the cache)
// on up to Options.Loaders goroutines, ahead of the caller within
// loadBudgetBytes, who takes them in order with next. Windows are claimed
// in order, each once the budget has room for it: the one the caller
// waits for never waits behind later ones. stop ends the loading and
// waits for it.
func (h *handler) load(ctx context.Context, sel []selected) (next func() (*loaded, error), stop func()) {
	type result struct {
		l   *loaded
		err error
	}
	workers := max(min(h.opts.Loaders, len(sel)), 1)
	results := make([]chan result, len(sel))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	var (
		mu      sync.Mutex
		room    = sync.NewCond(&mu)
		claimed int   // windows claimed
		ahead   int   // claimed and not taken
		held    int64 // their weight
	)
	claim := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		for {
			if ctx.Err() != nil || claimed >= len(sel) {
				return 0, false
			}
			w := loadWeight(&sel[claimed].w)
			if ahead == 0 || ahead < 2*workers && held+w <= loadBudgetBytes {
				ahead++
				held += w
				claimed++
				return claimed - 1, true
			}
			room.Wait()
		}
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i, ok := claim()
				if !ok {
					return
				}
				l, err := h.cache.get(ctx, h.src, sel[i].w.ID)
				results[i] <- result{l, err}
			}
		})
	}
	taken := 0
	next = func() (*loaded, error) {
		var r result
		select {
		case r = <-results[taken]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		mu.Lock()
		ahead--
		held -= loadWeight(&sel[taken].w)
		room.Broadcast()
		mu.Unlock()
		taken++
		return r.l, r.err
	}
	return next, func() {
		cancel()
		mu.Lock()
		room.Broadcast()
		mu.Unlock()
		wg.Wait()
	}
}

// addWindows merges the selected windows into column col of t.
func (h *handler) addWindows(ctx context.Context, sel []selected, res time.Duration, t *tree, col int) (span, int, error) {
	sp := span{res: res}
	if err := h.checkOpen(len(sel)); err != nil {
		return sp, 0, err
	}
	next, stop := h.load(ctx, sel)
	defer stop()
	for _, s := range sel {
		if err := ctx.Err(); err != nil {
			return sp, 0, err
		}
		l, err := next()
		if err != nil {
			return sp, 0, err
		}
		var keep func(int) bool
		if len(s.rest) > 0 {
			rest := s.rest
			keep = func(i int) bool { return matchSample(l.sampleLabels(i), rest) }
		}
		t.addProfile(l, col, keep, s.w.Labels)
		sp.add(s.w)
	}
	return sp, len(sel), nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func (h *handler) info(r *http.Request) ([]byte, string, error) {
	return jsonBody(struct {
		Title string `json:"title"`
	}{h.opts.Title})
}

func (h *handler) flamegraph(r *http.Request) ([]byte, string, error) {
	q, err := parseQuery(r.URL.Query(), "")
	if err != nil {
		return nil, "", err
	}
	maxNodes, minFrac, err := parsePruning(r.URL.Query())
	if err != nil {
		return nil, "", err
	}
	t, sp, n, err := h.singleTree(r.Context(), &q)
	if err != nil {
		return nil, "", err
	}
	extra := fmt.Appendf(nil, `"windows":%d,"from":%d,"to":%d,"resolution":%d,"total":%d,"nodes":%d,`,
		n, ms(sp.from), ms(sp.to), sp.res.Milliseconds(), t.nodes[0].total[0], len(t.nodes))
	return t.appendJSON(nil, extra, false, maxNodes, minFrac), "application/json", nil
}

func (h *handler) diff(r *http.Request) ([]byte, string, error) {
	v := r.URL.Query()
	for _, p := range []string{"a_from", "a_to", "b_from", "b_to"} {
		if v.Get(p) == "" {
			return nil, "", badf("diff needs a_from, a_to, b_from and b_to; %s is missing", p)
		}
	}
	qa, err := parseQuery(v, "a_")
	if err != nil {
		return nil, "", err
	}
	qb, err := parseQuery(v, "b_")
	if err != nil {
		return nil, "", err
	}
	maxNodes, minFrac, err := parsePruning(v)
	if err != nil {
		return nil, "", err
	}
	t, spa, spb, na, nb, err := h.collectDiff(r, &qa, &qb)
	if err != nil {
		return nil, "", err
	}
	root := t.nodes[0].total
	extra := fmt.Appendf(nil, `"a":{"windows":%d,"from":%d,"to":%d,"resolution":%d,"total":%d},"b":{"windows":%d,"from":%d,"to":%d,"resolution":%d,"total":%d},"nodes":%d,`,
		na, ms(spa.from), ms(spa.to), spa.res.Milliseconds(), root[0], nb, ms(spb.from), ms(spb.to), spb.res.Milliseconds(), root[1], len(t.nodes))
	return t.appendJSON(nil, extra, true, maxNodes, minFrac), "application/json", nil
}

// collectDiff builds the tree of a diff: range a in column 0, b in 1.
func (h *handler) collectDiff(r *http.Request, qa, qb *query) (t *tree, spa, spb span, na, nb int, err error) {
	t = newTree(qa.focus, qa.group)
	spa, na, err = h.collect(r.Context(), qa, t, 0)
	if err != nil {
		return
	}
	spb, nb, err = h.collect(r.Context(), qb, t, 1)
	return
}

// search totals the samples of the selection (or of a diff's two ranges,
// given a_from...) whose stacks hold a function whose name contains text,
// over the whole tree: a flame graph sent pruned cannot tell.
func (h *handler) search(r *http.Request) ([]byte, string, error) {
	v := r.URL.Query()
	text := strings.ToLower(v.Get("text"))
	if text == "" {
		return nil, "", badf("search needs text")
	}
	var t *tree
	if v.Get("a_from") != "" || v.Get("b_from") != "" {
		qa, err := parseQuery(v, "a_")
		if err != nil {
			return nil, "", err
		}
		qb, err := parseQuery(v, "b_")
		if err != nil {
			return nil, "", err
		}
		if t, _, _, _, _, err = h.collectDiff(r, &qa, &qb); err != nil {
			return nil, "", err
		}
	} else {
		q, err := parseQuery(v, "")
		if err != nil {
			return nil, "", err
		}
		if t, _, _, err = h.singleTree(r.Context(), &q); err != nil {
			return nil, "", err
		}
	}
	matched, functions := t.match(text)
	return jsonBody(struct {
		Total     [2]int64 `json:"total"`
		Matched   [2]int64 `json:"matched"`
		Functions int      `json:"functions"`
	}{t.nodes[0].total, matched, functions})
}

// sandwich answers the callers and the callees of one function (fn) in the
// selection, each as a flame graph body whose root's one child is fn.
func (h *handler) sandwich(r *http.Request) ([]byte, string, error) {
	v := r.URL.Query()
	fn := v.Get("fn")
	if fn == "" {
		return nil, "", badf("sandwich needs fn, the name of a function")
	}
	q, err := parseQuery(v, "")
	if err != nil {
		return nil, "", err
	}
	maxNodes, minFrac, err := parsePruning(v)
	if err != nil {
		return nil, "", err
	}
	t, sp, n, err := h.singleTree(r.Context(), &q)
	if err != nil {
		return nil, "", err
	}
	callers, callees, found := t.sandwich(fn)
	b := fmt.Appendf(nil, `{"fn":%s,"found":%t,"windows":%d,"from":%d,"to":%d,"resolution":%d,"total":%d,"unit":%s,"callers":`,
		appendString(nil, fn), found, n, ms(sp.from), ms(sp.to), sp.res.Milliseconds(), t.nodes[0].total[0], appendString(nil, t.unit))
	// Each side gets half the nodes; widths are shares of fn's total.
	half := maxNodes / 2
	if maxNodes > 0 && half == 0 {
		half = 1
	}
	b = callers.appendJSON(b, nil, false, half, minFrac)
	b = append(b, `,"callees":`...)
	b = callees.appendJSON(b, nil, false, half, minFrac)
	return append(b, '}'), "application/json", nil
}

func (h *handler) top(r *http.Request) ([]byte, string, error) {
	v := r.URL.Query()
	q, err := parseQuery(v, "")
	if err != nil {
		return nil, "", err
	}
	by := v.Get("sort")
	switch by {
	case "":
		by = "self"
	case "self", "total", "name":
	default:
		return nil, "", badf("parameter sort=%q: want self, total or name", by)
	}
	limit, err := parseCount(v, "limit", 500)
	if err != nil {
		return nil, "", err
	}
	t, sp, n, err := h.singleTree(r.Context(), &q)
	if err != nil {
		return nil, "", err
	}
	return jsonBody(struct {
		Unit       string   `json:"unit"`
		Windows    int      `json:"windows"`
		From       int64    `json:"from"`
		To         int64    `json:"to"`
		Resolution int64    `json:"resolution"`
		Total      int64    `json:"total"`
		Rows       []topRow `json:"rows"`
	}{t.unit, n, ms(sp.from), ms(sp.to), sp.res.Milliseconds(), t.nodes[0].total[0], t.top(by, limit)})
}

func (h *handler) timeline(r *http.Request) ([]byte, string, error) {
	v := r.URL.Query()
	q, err := parseQuery(v, "")
	if err != nil {
		return nil, "", err
	}
	step, err := parseDuration(v, "step")
	if err != nil {
		return nil, "", err
	}
	ctx := r.Context()
	type response struct {
		From    int64     `json:"from"`
		To      int64     `json:"to"`
		Step    int64     `json:"step"`
		Windows int       `json:"windows"`
		Counts  []float64 `json:"counts"`
	}
	from, to := q.from, q.to
	if !q.explicit {
		// Without a range, the timeline spans every stored window,
		// filtered or not, so the axis stays put as filters change.
		sp, err := h.span(ctx)
		if err != nil {
			return nil, "", err
		}
		if sp.from.IsZero() {
			return jsonBody(response{Counts: []float64{}})
		}
		from, to = sp.from, sp.to
		if !to.After(from) {
			to = from.Add(time.Millisecond)
		}
	}
	width := to.Sub(from)
	if step == 0 {
		step = niceStep(width / 120)
	}
	nb := int64((width + step - 1) / step)
	if nb > int64(h.opts.MaxBuckets) {
		return nil, "", badf("range/step gives %d buckets, more than the limit of %d", nb, h.opts.MaxBuckets)
	}
	// Windows whose samples must be counted one by one are opened; a
	// level whose period fits in a bucket is as good as the windows.
	all, _, err := h.listWindows(ctx, &q, func(ws []Window) int {
		n := 0
		for _, w := range ws {
			if ok, rest := q.windowFilters(w); ok && len(rest) > 0 {
				n++
			}
		}
		return n
	}, false, true, step)
	if err != nil {
		return nil, "", err
	}
	counts := make([]float64, nb)
	var sel []selected
	for _, w := range all {
		if ok, rest := q.windowFilters(w); ok {
			sel = append(sel, selected{w, rest})
		}
	}
	opened := 0
	for _, s := range sel {
		c := float64(s.w.Samples)
		if len(s.rest) > 0 {
			// Sample labels decide: count the matching samples.
			if opened++; opened > h.opts.MaxWindows {
				return nil, "", h.checkOpen(opened)
			}
			l, err := h.cache.get(ctx, h.src, s.w.ID)
			if err != nil {
				return nil, "", err
			}
			var sum int64
			for i, v := range l.values {
				if matchSample(l.sampleLabels(i), s.rest) {
					sum += v
				}
			}
			c = float64(sum)
		}
		spread(counts, from, step, s.w, c)
	}
	return jsonBody(response{ms(from), ms(to), step.Milliseconds(), len(sel), counts})
}

// niceStep rounds d up to 1, 2 or 5 times a power of ten milliseconds, or
// to a whole number of minutes or hours past a minute.
func niceStep(d time.Duration) time.Duration {
	for _, u := range []time.Duration{time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, 10 * time.Second} {
		for _, m := range []time.Duration{1, 2, 5} {
			if d <= m*u {
				return m * u
			}
		}
	}
	for _, s := range []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour} {
		if d <= s {
			return s
		}
	}
	return (d + time.Hour - 1) / time.Hour * time.Hour
}

// spread adds c samples of window w to the buckets counts, which start at
// from and are step wide, in proportion to the time w shares with each.
func spread(counts []float64, from time.Time, step time.Duration, w Window, c float64) {
	if c == 0 || len(counts) == 0 {
		return
	}
	bucket := func(t time.Time) int64 {
		return int64(t.Sub(from) / step)
	}
	if w.Duration <= 0 {
		if b := bucket(w.Start); b >= 0 && b < int64(len(counts)) && !w.Start.Before(from) {
			counts[b] += c
		}
		return
	}
	start, end := w.Start, w.Start.Add(w.Duration)
	rangeEnd := from.Add(step * time.Duration(len(counts)))
	lo, hi := later(start, from), earlier(end, rangeEnd)
	if !hi.After(lo) {
		return
	}
	rate := c / float64(w.Duration)
	for b := bucket(lo); b < int64(len(counts)); b++ {
		bs := from.Add(step * time.Duration(b))
		be := bs.Add(step)
		s, e := later(bs, lo), earlier(be, hi)
		if !e.After(s) {
			break
		}
		counts[b] += rate * float64(e.Sub(s))
	}
}

// labels lists, per filter, the values in the range that the other
// filters leave, so that each list is narrowed by the others and a filter
// can still be switched to another value; with the samples of each value
// where they are known exactly (see api/labels in the package doc).
func (h *handler) labels(r *http.Request) ([]byte, string, error) {
	q, err := parseQuery(r.URL.Query(), "")
	if err != nil {
		return nil, "", err
	}
	ctx := r.Context()
	type keyState struct {
		others  query            // q without this key's filter
		counts  map[string]int64 // samples per value
		inexact map[string]bool  // values listed without a count
	}
	keys := make([]*keyState, len(filterKeys))
	for i, fk := range filterKeys {
		ks := &keyState{others: q, counts: map[string]int64{}, inexact: map[string]bool{}}
		ks.others.filters = slices.DeleteFunc(slices.Clone(q.filters), func(f filter) bool { return f.key == fk.label })
		keys[i] = ks
	}
	// needsOpen reports whether the other filters leave a window for
	// key i (ok), whether its samples must be read for that key (its
	// value is a sample label the window does not list, or other filters
	// apply per sample: rest).
	needsOpen := func(w Window, i int) (ok, open bool, rest []filter) {
		ok, rest = keys[i].others.windowFilters(w)
		if !ok {
			return false, false, nil
		}
		_, inLabels := w.Labels[filterKeys[i].label]
		_, inValues := w.valuesOf(filterKeys[i].label)
		return true, len(rest) > 0 || !inLabels && !inValues, rest
	}
	// tooMany reports whether the only reason to open w for key i is that
	// the source knows the label has more values there than it lists (a
	// host starting processes all the time: hundreds of pids a window).
	// Only the newest maxLabelOpens such windows are opened; the list is
	// then marked partial.
	tooMany := func(w Window, i int, rest []filter) bool {
		vs, listed := w.Values[filterKeys[i].label]
		return len(rest) == 0 && listed && len(vs) == 0 && w.ValuesComplete
	}
	// The lists hold the values of the range at the timeline's
	// resolution (a level whose period fits one of its 120 buckets).
	from, to := q.from, q.to
	if !q.explicit {
		sp, err := h.span(ctx)
		if err != nil {
			return nil, "", err
		}
		from, to = sp.from, sp.to
	}
	ws, _, err := h.listWindows(ctx, &q, func(ws []Window) int {
		n := 0
		for _, w := range ws {
			for i := range filterKeys {
				if _, open, _ := needsOpen(w, i); open {
					n++
					break
				}
			}
		}
		return n
	}, false, false, niceStep(to.Sub(from)/120))
	if err != nil {
		return nil, "", err
	}
	// The windows that may be opened for lists with too many values to
	// be stored: the newest.
	var crowded []int
	for j, w := range ws {
		for i := range filterKeys {
			if ok, open, rest := needsOpen(w, i); ok && open && tooMany(w, i, rest) {
				crowded = append(crowded, j)
				break
			}
		}
	}
	slices.SortStableFunc(crowded, func(a, b int) int { return ws[b].Start.Compare(ws[a].Start) })
	allowed := make(map[int]bool, maxLabelOpens)
	for _, j := range crowded[:min(len(crowded), maxLabelOpens)] {
		allowed[j] = true
	}
	partial := map[string]bool{}
	opened := 0
	for j, w := range ws {
		var l *loaded
		for i, fk := range filterKeys {
			ks := keys[i]
			ok, open, rest := needsOpen(w, i)
			switch {
			case !ok:
				continue
			case open && tooMany(w, i, rest) && !allowed[j]:
				partial[fk.param] = true
				continue
			case !open:
				if v, ok := w.Labels[fk.label]; ok {
					ks.counts[v] += w.Samples
				} else {
					for _, v := range w.Values[fk.label] {
						ks.inexact[v] = true
					}
				}
				continue
			}
			if l == nil {
				if opened++; opened > h.opts.MaxWindows {
					return nil, "", h.checkOpen(opened)
				}
				if l, err = h.cache.get(ctx, h.src, w.ID); err != nil {
					return nil, "", err
				}
			}
			for i, v := range l.values {
				ls := l.sampleLabels(i)
				if len(rest) > 0 && !matchSample(ls, rest) {
					continue
				}
				if wv, ok := w.Labels[fk.label]; ok {
					ks.counts[wv] += v
					continue
				}
				for _, lb := range ls {
					switch {
					case lb.key != fk.label:
					case lb.isNum:
						ks.counts[strconv.FormatInt(lb.num, 10)] += v
					default:
						ks.counts[lb.str] += v
					}
				}
			}
		}
	}
	out := make(map[string]any)
	allCounts := make(map[string]map[string]int64)
	for i, fk := range filterKeys {
		ks := keys[i]
		vals := slices.AppendSeq(make([]string, 0, len(ks.counts)), maps.Keys(ks.counts))
		for v := range ks.inexact {
			if _, ok := ks.counts[v]; !ok {
				vals = append(vals, v)
			}
		}
		if len(vals) > maxLabelValues {
			// The values with the most samples (those without a count
			// last).
			slices.SortFunc(vals, func(a, b string) int {
				ca, oka := ks.counts[a]
				cb, okb := ks.counts[b]
				oka, okb = oka && !ks.inexact[a], okb && !ks.inexact[b]
				switch {
				case oka != okb:
					if oka {
						return -1
					}
					return 1
				case ca != cb:
					return cmpDesc(ca, cb)
				}
				return strings.Compare(a, b)
			})
			vals = vals[:maxLabelValues]
			partial[fk.param] = true
		}
		if fk.param == "pid" {
			slices.SortFunc(vals, func(a, b string) int {
				x, _ := strconv.ParseInt(a, 10, 64)
				y, _ := strconv.ParseInt(b, 10, 64)
				if x != y {
					return cmpDesc(y, x)
				}
				return strings.Compare(a, b)
			})
		} else {
			slices.Sort(vals)
		}
		out[fk.param] = vals
		c := make(map[string]int64)
		for _, v := range vals {
			if n, ok := ks.counts[v]; ok && !ks.inexact[v] {
				c[v] = n
			}
		}
		allCounts[fk.param] = c
	}
	out["counts"] = allCounts
	out["partial"] = partial
	return jsonBody(out)
}

func (h *handler) profile(r *http.Request) ([]byte, string, error) {
	q, err := parseQuery(r.URL.Query(), "")
	if err != nil {
		return nil, "", err
	}
	p, err := h.merged(r.Context(), &q)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "application/octet-stream", nil
}

// merged returns the selection as one pprof profile with the viewer's
// sample type only. Window labels become sample labels so that they
// survive the merge.
func (h *handler) merged(ctx context.Context, q *query) (*profile.Profile, error) {
	sel, _, err := h.selectWindows(ctx, q)
	if err != nil {
		return nil, err
	}
	if err := h.checkOpen(len(sel)); err != nil {
		return nil, err
	}
	var parts []*profile.Profile
	var sp span
	for _, s := range sel {
		// The download needs the profile's locations, which the cache
		// does not keep: open it again.
		p, err := h.src.Open(ctx, s.w.ID)
		if err != nil {
			return nil, fmt.Errorf("opening window %q: %w", s.w.ID, err)
		}
		if p == nil {
			return nil, fmt.Errorf("opening window %q: source returned no profile", s.w.ID)
		}
		l, err := prepare(p)
		if err != nil {
			return nil, fmt.Errorf("window %q: invalid profile: %w", s.w.ID, err)
		}
		vi := valueIndex(p)
		var hit []bool
		if q.focus != "" {
			hit = make([]bool, len(l.frames))
			for i, f := range l.frames {
				hit[i] = strings.Contains(strings.ToLower(f.name), q.focus)
			}
		}
		part := &profile.Profile{
			SampleType:    []*profile.ValueType{p.SampleType[vi]},
			PeriodType:    p.PeriodType,
			Period:        p.Period,
			TimeNanos:     s.w.Start.UnixNano(),
			DurationNanos: int64(s.w.Duration),
			Mapping:       p.Mapping,
			Location:      p.Location,
			Function:      p.Function,
		}
		for i, smp := range p.Sample {
			v := smp.Value[vi]
			if v == 0 || (len(s.rest) > 0 && !matchSample(labelsOf(smp), s.rest)) {
				continue
			}
			if hit != nil && !slices.ContainsFunc(l.stacks[i], func(f int32) bool { return hit[f] }) {
				continue
			}
			labels, copied := smp.Label, false
			for k, lv := range s.w.Labels {
				if _, ok := smp.Label[k]; ok {
					continue
				}
				if !copied {
					labels, copied = maps.Clone(smp.Label), true
					if labels == nil {
						labels = make(map[string][]string, len(s.w.Labels))
					}
				}
				labels[k] = []string{lv}
			}
			part.Sample = append(part.Sample, &profile.Sample{
				Location: smp.Location,
				Value:    []int64{v},
				Label:    labels,
				NumLabel: smp.NumLabel,
				NumUnit:  smp.NumUnit,
			})
		}
		sp.add(s.w) // as in the flame graph: every window merged
		if len(part.Sample) > 0 {
			parts = append(parts, part)
		}
	}
	if len(parts) == 0 {
		return nil, errNoSamples
	}
	m, err := profile.Merge(parts)
	if err != nil {
		return nil, fmt.Errorf("merging %d windows: %w", len(parts), err)
	}
	m.TimeNanos = sp.from.UnixNano()
	m.DurationNanos = int64(sp.to.Sub(sp.from))
	if err := m.CheckValid(); err != nil {
		return nil, fmt.Errorf("merged profile is invalid: %w", err)
	}
	return m, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
