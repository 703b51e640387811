package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// memSource is an in-memory Source for tests.
type memSource struct {
	windows []Window
	profs   map[string]*profile.Profile
	mu      sync.Mutex // Open may be called concurrently
	opens   int
	fail    atomic.Bool // Windows fails (a store that cannot be read)
}

func (m *memSource) Windows(ctx context.Context, from, to time.Time) ([]Window, error) {
	if m.fail.Load() {
		return nil, errors.New("store unreadable (test)")
	}
	var out []Window
	for _, w := range m.windows {
		if overlaps(w, from, to) {
			out = append(out, w)
		}
	}
	return out, nil
}

func (m *memSource) Open(ctx context.Context, id string) (*profile.Profile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opens++
	p, ok := m.profs[id]
	if !ok {
		return nil, fmt.Errorf("no window %q", id)
	}
	return p, nil
}

// stack is one synthetic sample: frames root first, "k:" prefix for a
// kernel frame, "j:" for a JIT frame.
type stack struct {
	frames []string
	v      int64
	labels map[string]string
	pid    int64 // numeric "pid" label if nonzero
}

// synth builds a valid profile of samples/count from stacks.
func synth(start time.Time, dur time.Duration, stacks []stack) *profile.Profile {
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType:    &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:        10_000_000,
		TimeNanos:     start.UnixNano(),
		DurationNanos: int64(dur),
	}
	user := &profile.Mapping{ID: 1, Start: 0x400000, Limit: 0x800000, File: "/bin/app"}
	kern := &profile.Mapping{ID: 2, Start: 0xffffffff81000000, Limit: 0xffffffffff000000, File: "[kernel.kallsyms]"}
	p.Mapping = []*profile.Mapping{user, kern}
	var jit *profile.Mapping // added at the first JIT frame
	locs := map[string]*profile.Location{}
	for _, s := range stacks {
		smp := &profile.Sample{Value: []int64{s.v, s.v * 10_000_000}}
		for i := len(s.frames) - 1; i >= 0; i-- {
			name := s.frames[i]
			loc := locs[name]
			if loc == nil {
				id := uint64(len(p.Location) + 1)
				fn := &profile.Function{ID: id, Name: strings.TrimPrefix(name, "k:")}
				loc = &profile.Location{ID: id, Mapping: user, Address: 0x400000 + id*16, Line: []profile.Line{{Function: fn}}}
				switch {
				case strings.HasPrefix(name, "k:"):
					loc.Mapping, loc.Address = kern, 0xffffffff81000000+id*16
				case strings.HasPrefix(name, "j:"):
					if jit == nil {
						jit = &profile.Mapping{ID: uint64(len(p.Mapping) + 1), Start: 0x7f0000000000, Limit: 0x7f0000100000, File: "[jit]"}
						p.Mapping = append(p.Mapping, jit)
					}
					fn.Name = strings.TrimPrefix(name, "j:")
					loc.Mapping, loc.Address = jit, 0x7f0000000000+id*16
				}
				p.Function = append(p.Function, fn)
				p.Location = append(p.Location, loc)
				locs[name] = loc
			}
			smp.Location = append(smp.Location, loc)
		}
		for k, v := range s.labels {
			if smp.Label == nil {
				smp.Label = map[string][]string{}
			}
			smp.Label[k] = []string{v}
		}
		if s.pid != 0 {
			smp.NumLabel = map[string][]int64{"pid": {s.pid}}
		}
		p.Sample = append(p.Sample, smp)
	}
	if err := p.CheckValid(); err != nil {
		panic(err)
	}
	return p
}

func (m *memSource) add(id string, start time.Time, dur time.Duration, labels map[string]string, stacks []stack) {
	if m.profs == nil {
		m.profs = map[string]*profile.Profile{}
	}
	p := synth(start, dur, stacks)
	var n int64
	for _, s := range p.Sample {
		n += s.Value[0]
	}
	m.windows = append(m.windows, Window{ID: id, Start: start, Duration: dur, Labels: labels, Samples: n})
	m.profs[id] = p
}

var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

// testSource has three consecutive 10s windows: two of service "api"
// (pid 10 as a window label), one of "db", whose samples carry comm and
// pid labels.
func testSource() *memSource {
	m := &memSource{}
	m.add("w1", t0, 10*time.Second, map[string]string{"service_name": "api", "pid": "10"}, []stack{
		{frames: []string{"main", "serve", "parse"}, v: 6},
		{frames: []string{"main", "serve", "k:sys_read"}, v: 2},
		{frames: []string{"main", "idle"}, v: 2},
	})
	m.add("w2", t0.Add(10*time.Second), 10*time.Second, map[string]string{"service_name": "api", "pid": "10"}, []stack{
		{frames: []string{"main", "serve", "parse"}, v: 1},
		{frames: []string{"main", "serve", "encode"}, v: 9},
	})
	m.add("w3", t0.Add(20*time.Second), 10*time.Second, map[string]string{"service_name": "db", "container_id": "c0ffee"}, []stack{
		{frames: []string{"main", "query"}, v: 4, labels: map[string]string{"comm": "postgres"}, pid: 77},
		{frames: []string{"main", "vacuum"}, v: 1, labels: map[string]string{"comm": "autovacuum"}, pid: 78},
	})
	return m
}

func get(t *testing.T, h http.Handler, path string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.Bytes()
}

func getJSON(t *testing.T, h http.Handler, path string, v any) {
	t.Helper()
	code, body := get(t, h, path)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

type fgNode struct {
	F int      `json:"f"`
	S int64    `json:"s"`
	T int64    `json:"t"`
	C []fgNode `json:"c"`
}

type fgResponse struct {
	Windows    int    `json:"windows"`
	From       int64  `json:"from"`
	To         int64  `json:"to"`
	Total      int64  `json:"total"`
	Unit       string `json:"unit"`
	Names      []string
	Kinds      []string
	FrameKinds []int `json:"frame_kinds"`
	Root       fgNode
	Nodes      int `json:"nodes"`
	Pruned     int `json:"pruned"`
}

// paths flattens a flame graph into "a;b;c" -> total, and checks that
// every node's total is its self plus its children's totals.
func (r *fgResponse) paths(t *testing.T) map[string]int64 {
	out := map[string]int64{}
	var walk func(n fgNode, prefix string)
	walk = func(n fgNode, prefix string) {
		sum := n.S
		for _, c := range n.C {
			sum += c.T
			p := r.Names[c.F]
			if prefix != "" {
				p = prefix + ";" + p
			}
			out[p] = c.T
			walk(c, p)
		}
		if sum != n.T {
			t.Errorf("node %q: total %d != self+children %d", prefix, n.T, sum)
		}
	}
	walk(r.Root, "")
	return out
}

func ms2(t time.Time) string { return fmt.Sprint(t.UnixMilli()) }

func TestFlamegraphRangeMerge(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	tests := []struct {
		from, to time.Duration
		windows  int
		want     map[string]int64
	}{
		// Overlapping w1 and w2 merges both.
		{5 * time.Second, 15 * time.Second, 2, map[string]int64{
			"main": 20, "main;serve": 18, "main;serve;parse": 7, "main;serve;encode": 9, "main;serve;sys_read": 2, "main;idle": 2,
		}},
		// Ranges are half-open: [10s,20s) is w2 only.
		{10 * time.Second, 20 * time.Second, 1, map[string]int64{
			"main": 10, "main;serve": 10, "main;serve;parse": 1, "main;serve;encode": 9,
		}},
	}
	for _, tt := range tests {
		var r fgResponse
		getJSON(t, h, "/api/flamegraph?from="+ms2(t0.Add(tt.from))+"&to="+ms2(t0.Add(tt.to)), &r)
		if r.Windows != tt.windows {
			t.Errorf("[%v,%v): %d windows, want %d", tt.from, tt.to, r.Windows, tt.windows)
		}
		got := r.paths(t)
		if len(got) != len(tt.want) {
			t.Errorf("[%v,%v): paths %v, want %v", tt.from, tt.to, got, tt.want)
		}
		for p, v := range tt.want {
			if got[p] != v {
				t.Errorf("[%v,%v): %s = %d, want %d", tt.from, tt.to, p, got[p], v)
			}
		}
		if r.Total != r.Root.T || r.Unit != "samples/count" {
			t.Errorf("total %d root %d unit %q", r.Total, r.Root.T, r.Unit)
		}
	}

	// Frame kinds: sys_read came from [kernel.kallsyms].
	var r fgResponse
	getJSON(t, h, "/api/flamegraph", &r)
	if !slices.Equal(r.Kinds, []string{"user", "kernel", "jit", "group"}) {
		t.Errorf("kinds %q, want user, kernel, jit, group", r.Kinds)
	}
	for i, n := range r.Names {
		want := "user"
		if n == "sys_read" {
			want = "kernel"
		}
		if got := r.Kinds[r.FrameKinds[i]]; got != want {
			t.Errorf("%s: kind %s, want %s", n, got, want)
		}
	}
	if r.Windows != 3 || r.Total != 25 {
		t.Errorf("whole store: %d windows, %d samples; want 3, 25", r.Windows, r.Total)
	}
	if r.From != t0.UnixMilli() || r.To != t0.Add(30*time.Second).UnixMilli() {
		t.Errorf("span [%d,%d)", r.From, r.To)
	}
}

func TestFilters(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	tests := []struct {
		query string
		total int64
		paths []string
	}{
		{"service=api", 20, []string{"main;serve;encode"}},
		{"service=db", 5, []string{"main;query", "main;vacuum"}},
		{"service=api&service=db", 25, nil},
		{"container=c0ffee", 5, nil},
		{"comm=postgres", 4, []string{"main;query"}},
		{"pid=78", 1, []string{"main;vacuum"}},       // numeric sample label
		{"pid=10", 20, []string{"main;serve;parse"}}, // window label
		{"pid=10&comm=postgres", 0, nil},
		{"service=api&q=PARSE", 7, []string{"main;serve;parse"}}, // focus
		{"service=nope", 0, nil},
	}
	for _, tt := range tests {
		var r fgResponse
		getJSON(t, h, "/api/flamegraph?"+tt.query, &r)
		if r.Total != tt.total {
			t.Errorf("%s: total %d, want %d", tt.query, r.Total, tt.total)
		}
		got := r.paths(t)
		for _, p := range tt.paths {
			if got[p] == 0 {
				t.Errorf("%s: missing path %s in %v", tt.query, p, got)
			}
		}
	}
}

func TestBadParams(t *testing.T) {
	h := NewHandler(testSource(), Options{MaxWindows: 2})
	for _, path := range []string{
		"/api/flamegraph?from=yesterday",
		"/api/flamegraph?from=2000&to=1000",
		"/api/flamegraph?from=1000&to=1000",
		"/api/flamegraph?pid=init",
		"/api/flamegraph", // three windows, limit two
		"/api/top?sort=cost",
		"/api/top?limit=0",
		"/api/flamegraph?maxnodes=-1",
		"/api/timeline?step=-5",
		"/api/timeline?step=soon",
		"/api/timeline?from=0&to=100000000&step=1",
		"/api/diff?a_from=1&a_to=2&b_from=3",
		"/api/diff?a_from=1&a_to=2&b_from=3&b_to=x",
		"/api/profile.pb.gz?to=bad",
		"/api/labels?from=x",
	} {
		code, body := get(t, h, path)
		if code != 400 || len(body) < 10 {
			t.Errorf("GET %s: %d %q, want 400 with a message", path, code, body)
		}
	}
	if code, _ := get(t, h, "/api/profile.pb.gz?service=nope"); code != 404 {
		t.Errorf("empty selection download: %d, want 404", code)
	}
}

func TestProfileDownload(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	for _, query := range []string{"", "service=api", "from=" + ms2(t0.Add(15*time.Second)) + "&comm=postgres"} {
		code, body := get(t, h, "/api/profile.pb.gz?"+query)
		if code != 200 {
			t.Fatalf("%s: %d %s", query, code, body)
		}
		p, err := profile.Parse(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if err := p.CheckValid(); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		var r fgResponse
		getJSON(t, h, "/api/flamegraph?"+query, &r)
		var sum int64
		services := map[string]bool{}
		for _, s := range p.Sample {
			sum += s.Value[0]
			for _, v := range s.Label["service_name"] {
				services[v] = true
			}
		}
		if sum != r.Total || len(p.SampleType) != 1 || p.SampleType[0].Type != "samples" {
			t.Errorf("%s: pprof has %d %v, flame graph %d", query, sum, p.SampleType, r.Total)
		}
		if len(services) == 0 {
			t.Errorf("%s: window labels lost in the download", query)
		}
		if p.TimeNanos != r.From*1e6 || p.DurationNanos != (r.To-r.From)*1e6 {
			t.Errorf("%s: time %d+%d, want [%d,%d) ms", query, p.TimeNanos, p.DurationNanos, r.From, r.To)
		}
	}
}

func TestDiff(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	a := "a_from=" + ms2(t0) + "&a_to=" + ms2(t0.Add(10*time.Second))
	b := "&b_from=" + ms2(t0.Add(10*time.Second)) + "&b_to=" + ms2(t0.Add(20*time.Second))
	var r struct {
		A, B  struct{ Total int64 }
		Names []string
		Root  struct {
			T [2]int64
			C []struct {
				F int
				T [2]int64
				C []struct {
					F int
					S [2]int64
					T [2]int64
				}
			}
		}
	}
	getJSON(t, h, "/api/diff?"+a+b, &r)
	if r.A.Total != 10 || r.B.Total != 10 || r.Root.T != [2]int64{10, 10} {
		t.Fatalf("totals a=%d b=%d root=%v", r.A.Total, r.B.Total, r.Root.T)
	}
	got := map[string][2]int64{}
	for _, c := range r.Root.C[0].C {
		got[r.Names[c.F]] = c.T
	}
	want := map[string][2]int64{"serve": {8, 10}, "idle": {2, 0}}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
}

func TestTop(t *testing.T) {
	m := &memSource{}
	// Recursion: f appears twice in one stack but counts once in total.
	m.add("r", t0, time.Second, nil, []stack{
		{frames: []string{"main", "f", "f", "g"}, v: 3},
		{frames: []string{"main", "f"}, v: 1},
		{frames: []string{"main", "g"}, v: 2},
	})
	h := NewHandler(m, Options{})
	var r struct {
		Total int64
		Rows  []topRow
	}
	getJSON(t, h, "/api/top", &r)
	want := []topRow{{"g", "user", 5, 5}, {"f", "user", 1, 4}, {"main", "user", 0, 6}}
	if r.Total != 6 || fmt.Sprint(r.Rows) != fmt.Sprint(want) {
		t.Errorf("top: total %d rows %v, want 6 %v", r.Total, r.Rows, want)
	}
	getJSON(t, h, "/api/top?sort=total&limit=1", &r)
	if len(r.Rows) != 1 || r.Rows[0].Name != "main" {
		t.Errorf("top by total: %v", r.Rows)
	}
}

func TestTimeline(t *testing.T) {
	src := testSource()
	h := NewHandler(src, Options{})
	var r struct {
		From, To, Step int64
		Windows        int
		Counts         []float64
	}
	getJSON(t, h, "/api/timeline?step=5s", &r)
	want := []float64{5, 5, 5, 5, 2.5, 2.5}
	if r.From != t0.UnixMilli() || r.Step != 5000 || fmt.Sprint(r.Counts) != fmt.Sprint(want) {
		t.Errorf("timeline from %d step %d counts %v, want %d 5000 %v", r.From, r.Step, r.Counts, t0.UnixMilli(), want)
	}
	if src.opens != 0 {
		t.Errorf("unfiltered timeline opened %d profiles, want metadata only", src.opens)
	}
	// A sample-label filter counts matching samples; the range clips.
	getJSON(t, h, "/api/timeline?comm=postgres&step=10s&from="+ms2(t0.Add(10*time.Second))+"&to="+ms2(t0.Add(30*time.Second)), &r)
	if fmt.Sprint(r.Counts) != fmt.Sprint([]float64{0, 4}) {
		t.Errorf("comm=postgres: %v, want [0 4]", r.Counts)
	}
	// The default step is a round one giving at most 120 buckets (30s:
	// 500ms, 60 buckets) that sum to all samples.
	getJSON(t, h, "/api/timeline", &r)
	var sum float64
	for _, c := range r.Counts {
		sum += c
	}
	if len(r.Counts) != 60 || r.Step != 500 || math.Abs(sum-25) > 1e-6 {
		t.Errorf("default timeline: %d buckets summing to %v", len(r.Counts), sum)
	}
}

// labelsResponse is api/labels: values per filter, and their samples
// where known exactly.
type labelsResponse struct {
	Service, Container, Comm, Pid []string
	Counts                        map[string]map[string]int64
}

func (r labelsResponse) lists() map[string][]string {
	return map[string][]string{"service": r.Service, "container": r.Container, "comm": r.Comm, "pid": r.Pid}
}

func TestLabels(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	var r labelsResponse
	getJSON(t, h, "/api/labels", &r)
	want := map[string][]string{
		"service":   {"api", "db"},
		"container": {"c0ffee"},
		"comm":      {"autovacuum", "postgres"},
		"pid":       {"10", "77", "78"},
	}
	if fmt.Sprint(r.lists()) != fmt.Sprint(want) {
		t.Errorf("labels %v, want %v", r.lists(), want)
	}
	wantCounts := map[string]map[string]int64{
		"service":   {"api": 20, "db": 5},
		"container": {"c0ffee": 5},
		"comm":      {"autovacuum": 1, "postgres": 4},
		"pid":       {"10": 20, "77": 4, "78": 1},
	}
	if fmt.Sprint(r.Counts) != fmt.Sprint(wantCounts) {
		t.Errorf("counts %v, want %v", r.Counts, wantCounts)
	}
}

// TestLabelsNarrowed: each list is narrowed by the other filters and by
// the range, not by its own filter, and counts what they leave.
// TestLabelsComplete: a window whose source lists all its sample labels'
// values (ValuesComplete) is not opened for the lists, nor for a filter
// it cannot match; one whose source does not say so is.
func TestLabelsComplete(t *testing.T) {
	src := testSource()
	for i := range src.windows {
		w := &src.windows[i]
		if w.ID == "w3" {
			w.Values = map[string][]string{"comm": {"autovacuum", "postgres"}, "pid": {"77", "78"}}
		}
		w.ValuesComplete = true
	}
	h := NewHandler(src, Options{})
	var got struct {
		Comm, Pid, Container []string
	}
	getJSON(t, h, "/api/labels", &got)
	if src.opens != 0 || fmt.Sprint(got.Comm, got.Pid, got.Container) != "[autovacuum postgres] [10 77 78] [c0ffee]" {
		t.Errorf("complete values: %d windows opened, lists %+v", src.opens, got)
	}
	// A comm no window has: nothing to open.
	if code, body := get(t, h, "/api/flamegraph?comm=bash"); code != 200 || src.opens != 0 {
		t.Errorf("filter on an absent comm: %d %s, %d windows opened", code, body, src.opens)
	}
	// Without ValuesComplete, w1 and w2 (no comm, no container listed)
	// must be opened to learn they have none.
	for i := range src.windows {
		src.windows[i].ValuesComplete = false
	}
	h = NewHandler(src, Options{})
	getJSON(t, h, "/api/labels", &got)
	if src.opens != 2 || fmt.Sprint(got.Comm, got.Pid, got.Container) != "[autovacuum postgres] [10 77 78] [c0ffee]" {
		t.Errorf("values not complete: %d windows opened (want w1, w2), lists %+v", src.opens, got)
	}
}

func TestLabelsNarrowed(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	for _, c := range []struct {
		query  string
		lists  map[string][]string
		counts map[string]map[string]int64
	}{
		{"service=db", map[string][]string{
			"service": {"api", "db"}, "container": {"c0ffee"}, "comm": {"autovacuum", "postgres"}, "pid": {"77", "78"},
		}, map[string]map[string]int64{
			"service": {"api": 20, "db": 5}, "container": {"c0ffee": 5}, "comm": {"autovacuum": 1, "postgres": 4}, "pid": {"77": 4, "78": 1},
		}},
		{"pid=77", map[string][]string{
			"service": {"db"}, "container": {"c0ffee"}, "comm": {"postgres"}, "pid": {"10", "77", "78"},
		}, map[string]map[string]int64{
			"service": {"db": 4}, "container": {"c0ffee": 4}, "comm": {"postgres": 4}, "pid": {"10": 20, "77": 4, "78": 1},
		}},
		// w1 only: 10 s from t0.
		{fmt.Sprintf("from=%d&to=%d", t0.UnixMilli(), t0.Add(10*time.Second).UnixMilli()), map[string][]string{
			"service": {"api"}, "container": nil, "comm": nil, "pid": {"10"},
		}, map[string]map[string]int64{
			"service": {"api": 10}, "container": {}, "comm": {}, "pid": {"10": 10},
		}},
	} {
		var r labelsResponse
		getJSON(t, h, "/api/labels?"+c.query, &r)
		if fmt.Sprint(r.lists()) != fmt.Sprint(c.lists) || fmt.Sprint(r.Counts) != fmt.Sprint(c.counts) {
			t.Errorf("%s: labels %v counts %v, want %v %v", c.query, r.lists(), r.Counts, c.lists, c.counts)
		}
	}
}

func TestCacheBounded(t *testing.T) {
	src := testSource()
	h := NewHandler(src, Options{CacheProfiles: 2, Loaders: 1}) // windows loaded in order
	for range 2 {
		get(t, h, "/api/flamegraph?service=api") // w1, w2: cached
	}
	if src.opens != 2 {
		t.Errorf("second request reopened: %d opens, want 2", src.opens)
	}
	get(t, h, "/api/flamegraph") // w3 evicts w1
	get(t, h, "/api/flamegraph?service=db")
	if src.opens != 3 {
		t.Errorf("%d opens, want 3", src.opens)
	}
	get(t, h, "/api/flamegraph?service=api&q=.") // a new tree (see TestCacheBytesBounded)
	if src.opens != 5 {
		t.Errorf("%d opens, want 5: w1 and w2 were evicted", src.opens)
	}
}

// TestCacheBytesBounded: the cache also holds no more than CacheBytes of
// prepared profiles (here room for about one), keeping the newest.
func TestCacheBytesBounded(t *testing.T) {
	src := testSource()
	l, err := prepare(src.profs["w1"])
	if err != nil {
		t.Fatal(err)
	}
	if l.bytes < 200 {
		t.Fatalf("w1 is estimated at %d bytes", l.bytes)
	}
	h := NewHandler(src, Options{CacheBytes: l.bytes + l.bytes/2, Loaders: 1}) // windows loaded in order
	// (A focus that every stack matches makes each request's tree new,
	// so that the profiles are asked from the cache again.)
	get(t, h, "/api/flamegraph?service=api")     // w1, then w2 evicts w1
	get(t, h, "/api/flamegraph?service=api&q=.") // w1 again evicts w2, and so on
	if src.opens != 4 {
		t.Errorf("%d opens, want 4: only one of w1, w2 fits", src.opens)
	}
	get(t, h, "/api/flamegraph?service=db")
	get(t, h, "/api/flamegraph?service=db&q=.") // w3 alone: kept
	if src.opens != 5 {
		t.Errorf("%d opens, want 5: w3 stays cached", src.opens)
	}
}

// TestTreeShared: the requests of one view (flame graph, top table,
// search) merge the profiles once, even when the profiles do not stay in
// the cache; a window added to the range makes a new tree.
func TestTreeShared(t *testing.T) {
	src := testSource()
	l, err := prepare(src.profs["w1"])
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(src, Options{CacheBytes: l.bytes + l.bytes/2}) // room for one profile
	var fg fgResponse
	getJSON(t, h, "/api/flamegraph?service=api", &fg)
	opens := src.opens
	var wg sync.WaitGroup
	for _, p := range []string{"/api/top?service=api", "/api/search?service=api&text=main", "/api/flamegraph?service=api&minwidth=0.1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body := get(t, h, p); code != 200 {
				t.Errorf("%s: %d %s", p, code, body)
			}
		}()
	}
	wg.Wait()
	if src.opens != opens || opens != 2 {
		t.Errorf("%d opens for the flame graph, %d after the view's other requests; want 2 and no more", opens, src.opens)
	}
	// A new window in the range: built again, and it counts.
	src.profs["w4"] = src.profs["w1"]
	w := src.windows[0]
	w.ID, w.Start = "w4", w.Start.Add(-time.Hour)
	src.windows = append([]Window{w}, src.windows...)
	var again fgResponse
	getJSON(t, h, "/api/flamegraph?service=api", &again)
	if src.opens == opens || again.Root.T <= fg.Root.T {
		t.Errorf("after a window was added: %d opens (was %d), total %d (was %d)", src.opens, opens, again.Root.T, fg.Root.T)
	}
}

func TestPage(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		if code, body := get(t, h, p); code != 200 || len(body) < 100 {
			t.Errorf("GET %s: %d, %d bytes", p, code, len(body))
		}
	}
}

func TestPrune(t *testing.T) {
	m := &memSource{}
	m.profs = map[string]*profile.Profile{"big": bigProfile(2000, 5000)}
	m.windows = []Window{{ID: "big", Start: t0, Duration: time.Second, Samples: 1}}
	h := NewHandler(m, Options{})
	var full, pruned struct {
		Nodes, Pruned int
		Root          fgNode
	}
	getJSON(t, h, "/api/flamegraph", &full)
	getJSON(t, h, "/api/flamegraph?maxnodes=300", &pruned)
	var all, kept []int64
	var walk func(n fgNode, out *[]int64)
	walk = func(n fgNode, out *[]int64) {
		*out = append(*out, n.T)
		var sum int64
		for _, c := range n.C {
			sum += c.T
			walk(c, out)
		}
		if sum+n.S > n.T {
			t.Errorf("children and self %d exceed total %d", sum+n.S, n.T)
		}
	}
	walk(full.Root, &all)
	walk(pruned.Root, &kept)
	if full.Pruned != 0 || len(all) != full.Nodes || full.Nodes <= 300 {
		t.Fatalf("full tree: %d nodes sent, %d built, %d pruned", len(all), full.Nodes, full.Pruned)
	}
	if len(kept) != 300 || pruned.Pruned != full.Nodes-300 {
		t.Fatalf("maxnodes=300: %d nodes sent, %d pruned of %d", len(kept), pruned.Pruned, full.Nodes)
	}
	// The kept nodes are the 300 largest.
	slices.Sort(all)
	slices.Sort(kept)
	if kept[0] < all[len(all)-300] {
		t.Errorf("smallest kept total %d < 300th largest %d", kept[0], all[len(all)-300])
	}
}

// allPaths flattens a flame graph, pruned or not, into ";a;b;c" -> total
// ("" for the root).
func (r *fgResponse) allPaths() map[string]int64 {
	out := map[string]int64{}
	var walk func(n fgNode, path string)
	walk = func(n fgNode, path string) {
		out[path] = n.T
		for _, c := range n.C {
			walk(c, path+";"+r.Names[c.F])
		}
	}
	walk(r.Root, "")
	return out
}

func TestPruneMinWidth(t *testing.T) {
	m := &memSource{}
	m.profs = map[string]*profile.Profile{"big": bigProfile(2000, 5000)}
	m.windows = []Window{{ID: "big", Start: t0, Duration: time.Second, Samples: 1}}
	h := NewHandler(m, Options{})
	var full, narrow fgResponse
	getJSON(t, h, "/api/flamegraph", &full)
	getJSON(t, h, "/api/flamegraph?minwidth=0.002", &narrow)
	all, sent := full.allPaths(), narrow.allPaths()
	root := full.Root.T
	min := int64(math.Ceil(0.002 * float64(root)))
	want := 0
	for p, v := range all {
		if v >= min {
			want++
			if sent[p] != v {
				t.Errorf("%s: %d samples (at least %d): sent as %d", p, v, min, sent[p])
			}
		}
	}
	for p, v := range sent {
		if v < min {
			t.Errorf("%s: %d samples, narrower than %d, was sent", p, v, min)
		}
	}
	if len(sent) != want || narrow.Pruned != full.Nodes-want || want < 20 || want > full.Nodes/4 {
		t.Fatalf("minwidth=0.002: %d nodes sent (%d pruned), want %d of %d", len(sent), narrow.Pruned, want, full.Nodes)
	}
	// Only the names of the nodes sent, each used.
	used := map[int]bool{}
	var walk func(n fgNode)
	walk = func(n fgNode) {
		if n.F >= 0 {
			used[n.F] = true
		}
		for _, c := range n.C {
			walk(c)
		}
	}
	walk(narrow.Root)
	if len(narrow.Names) != len(used) || len(narrow.FrameKinds) != len(used) || len(narrow.Names) >= len(full.Names) {
		t.Errorf("%d names and %d kinds sent for %d frames used (full tree: %d names)", len(narrow.Names), len(narrow.FrameKinds), len(used), len(full.Names))
	}
	for _, p := range []string{"minwidth=1", "minwidth=-0.1", "minwidth=x", "minwidth=NaN"} {
		if code, _ := get(t, h, "/api/flamegraph?"+p); code != 400 {
			t.Errorf("%s: %d, want 400", p, code)
		}
	}
}

// TestSearchPruned checks /api/search against the full tree: a pruned
// flame graph cannot total a search, the server can.
func TestSearchPruned(t *testing.T) {
	m := &memSource{}
	m.profs = map[string]*profile.Profile{"big": bigProfile(2000, 5000)}
	m.windows = []Window{{ID: "big", Start: t0, Duration: time.Second, Samples: 1}}
	h := NewHandler(m, Options{})
	var full, narrow fgResponse
	getJSON(t, h, "/api/flamegraph", &full)
	getJSON(t, h, "/api/flamegraph?minwidth=0.01", &narrow)
	// The client's count: matching nodes' totals, not under a match.
	share := func(r *fgResponse, text string) (sum int64) {
		var walk func(n fgNode)
		walk = func(n fgNode) {
			if n.F >= 0 && strings.Contains(strings.ToLower(r.Names[n.F]), text) {
				sum += n.T
				return
			}
			for _, c := range n.C {
				walk(c)
			}
		}
		walk(r.Root)
		return sum
	}
	for _, text := range []string{"pkg7.", "func1", "PKG3"} {
		var got struct {
			Total     [2]int64
			Matched   [2]int64
			Functions int
		}
		getJSON(t, h, "/api/search?text="+text, &got)
		want := share(&full, strings.ToLower(text))
		fns := 0
		for _, n := range full.Names {
			if strings.Contains(strings.ToLower(n), strings.ToLower(text)) {
				fns++
			}
		}
		if got.Matched[0] != want || got.Total[0] != full.Root.T || got.Functions != fns {
			t.Errorf("search %q: %+v, want %d of %d in %d functions", text, got, want, full.Root.T, fns)
		}
		if pr := share(&narrow, strings.ToLower(text)); pr >= want {
			t.Errorf("search %q: the pruned tree totals %d, not less than %d: the test proves nothing", text, pr, want)
		}
	}
	if code, _ := get(t, h, "/api/search"); code != 400 {
		t.Errorf("search without text: %d, want 400", code)
	}
}

// FuzzPrepare feeds arbitrary bytes through the pprof parser into the
// viewer's stack resolution and tree building: hostile profiles must not
// panic.
func FuzzPrepare(f *testing.F) {
	for _, name := range []string{"testdata/cpusplit.pb.gz"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	var buf bytes.Buffer
	testSource().profs["w3"].WriteUncompressed(&buf)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := profile.ParseData(data)
		if err != nil {
			return
		}
		l, err := prepare(p)
		if err != nil {
			return
		}
		tr := newTree("a", "")
		tr.addProfile(l, 0, nil, nil)
		tr.appendJSON(nil, nil, false, 10, 0.01)
		tr.match("a")
		tr.top("self", 10)
	})
}

// fixture is one entry of testdata/fixtures.json: a real profile and the
// function that should dominate it.
type fixture struct {
	File       string  `json:"file"`
	About      string  `json:"about"`
	Hot        string  `json:"hot"`         // function with the most self samples
	Search     string  `json:"search"`      // what a user types to find it
	SelfShare  float64 `json:"self_share"`  // its self share, percent
	TotalShare float64 `json:"total_share"` // its total share; self_share if 0
	Tolerance  float64 `json:"tolerance"`   // allowed error, points
}

func loadFixtures(t testing.TB) []fixture {
	b, err := os.ReadFile("testdata/fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var fs []fixture
	if err := json.Unmarshal(b, &fs); err != nil {
		t.Fatalf("testdata/fixtures.json: %v", err)
	}
	if len(fs) == 0 {
		t.Fatal("testdata/fixtures.json lists no fixtures")
	}
	return fs
}

func TestFixtures(t *testing.T) {
	for _, fx := range loadFixtures(t) {
		t.Run(fx.File, func(t *testing.T) {
			src, err := FileSource(filepath.Join("testdata", fx.File))
			if err != nil {
				t.Fatal(err)
			}
			h := NewHandler(src, Options{})
			var r struct {
				Total int64
				Rows  []topRow
			}
			getJSON(t, h, "/api/top", &r)
			if len(r.Rows) == 0 || r.Rows[0].Name != fx.Hot {
				t.Fatalf("top rows %v, want %s first", r.Rows[:min(len(r.Rows), 3)], fx.Hot)
			}
			share := 100 * float64(r.Rows[0].Self) / float64(r.Total)
			if math.Abs(share-fx.SelfShare) > fx.Tolerance {
				t.Errorf("%s self share %.1f%%, want %.0f±%.0f", fx.Hot, share, fx.SelfShare, fx.Tolerance)
			}
			// The download round-trips.
			code, body := get(t, h, "/api/profile.pb.gz")
			p, err := profile.Parse(bytes.NewReader(body))
			if code != 200 || err != nil {
				t.Fatalf("download: %d %v", code, err)
			}
			if err := p.CheckValid(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestServeFile exercises FileSource through a real HTTP server.
func TestServeFile(t *testing.T) {
	src, err := FileSource("testdata/cpusplit.pb.gz")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(src, Options{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/labels?" + url.Values{"from": {"0"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"pid":[]`) {
		t.Errorf("labels of a Go profile: %d %s", resp.StatusCode, b)
	}
	if _, err := FileSource("testdata/fixtures.json"); err == nil {
		t.Error("FileSource accepted a JSON file")
	}
}

// bigProfile has n distinct functions, called along a random call tree of
// n+n/5 nodes (some functions are reached by two paths), shallow nodes
// favoured as parents like real programs; samples land on random nodes.
func bigProfile(n, samples int) *profile.Profile {
	rng := rand.New(rand.NewPCG(1, 2))
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     1,
	}
	m := &profile.Mapping{ID: 1, Start: 0x400000, Limit: 0x40000000, File: "/bin/big"}
	p.Mapping = []*profile.Mapping{m}
	for i := range n {
		id := uint64(i + 1)
		fn := &profile.Function{ID: id, Name: fmt.Sprintf("pkg%d.func%d", i%97, i)}
		p.Function = append(p.Function, fn)
		p.Location = append(p.Location, &profile.Location{ID: id, Mapping: m, Address: 0x400000 + id, Line: []profile.Line{{Function: fn}}})
	}
	nodes := n + n/5
	parent := make([]int, nodes)
	for i := 1; i < nodes; i++ {
		// Square a uniform variate: parents skew to early (shallow) nodes.
		u := rng.Float64()
		parent[i] = int(u * u * float64(i))
	}
	for range samples {
		s := &profile.Sample{Value: []int64{1 + rng.Int64N(5)}}
		for i := rng.IntN(nodes); ; i = parent[i] {
			s.Location = append(s.Location, p.Location[i%n])
			if i == 0 {
				break
			}
		}
		p.Sample = append(p.Sample, s)
	}
	return p
}

// BenchmarkFlamegraph50k measures building and encoding the merged tree of
// a profile with 50,000 distinct functions (prepared, as when cached).
func BenchmarkFlamegraph50k(b *testing.B) {
	l, err := prepare(bigProfile(50_000, 100_000))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		t := newTree("", "")
		t.addProfile(l, 0, nil, nil)
		size = len(t.appendJSON(nil, nil, false, 0, 0))
		b.ReportMetric(float64(len(t.nodes)), "nodes")
	}
	b.ReportMetric(float64(size), "json-bytes")
}

// BenchmarkPrepare50k measures resolving a 50k-function profile's stacks,
// the cost of a cache miss.
func BenchmarkPrepare50k(b *testing.B) {
	p := bigProfile(50_000, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := prepare(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWindowValues: a window that lists its sample labels' values
// (Window.Values, as the store's index does) is ruled out by a filter none
// of them matches, and listed in api/labels, without opening its profile;
// one that matches is opened and filtered per sample as before.
func TestWindowValues(t *testing.T) {
	m := testSource()
	m.windows[2].Values = map[string][]string{"pid": {"77", "78"}, "comm": {"autovacuum", "postgres"}}
	h := NewHandler(m, Options{})

	var labels labelsResponse
	getJSON(t, h, "/api/labels", &labels)
	if m.opens != 2 { // w1 and w2 have no values: opened for comm
		t.Errorf("api/labels opened %d windows, want 2 (not w3, which lists its values)", m.opens)
	}
	if !slices.Equal(labels.Comm, []string{"autovacuum", "postgres"}) || !slices.Contains(labels.Pid, "77") {
		t.Errorf("labels %v", labels)
	}
	// Listed from w3's values, without opening it: no count.
	if _, ok := labels.Counts["comm"]["postgres"]; ok {
		t.Errorf("counts %v: postgres has a count though w3 was not opened", labels.Counts)
	}

	// A fresh handler: nothing cached. w1 and w2 are ruled out by their
	// pid window label, w3 by its values.
	m.opens = 0
	h = NewHandler(m, Options{})
	var fg fgResponse
	getJSON(t, h, "/api/flamegraph?pid=99", &fg)
	if fg.Total != 0 || m.opens != 0 {
		t.Errorf("pid=99: total %d after %d opens, want 0 after none", fg.Total, m.opens)
	}
	getJSON(t, h, "/api/flamegraph?comm=postgres", &fg)
	if fg.Total != 4 || m.opens != 3 {
		t.Errorf("comm=postgres: total %d after %d opens, want 4 after 3", fg.Total, m.opens)
	}
}

// TestGroupBy: group=LABEL puts one frame per value of the label under the
// root, from window labels (service) or sample labels (comm, pid), keeps
// every path below it, and stays out of the top table.
func TestGroupBy(t *testing.T) {
	h := NewHandler(testSource(), Options{})
	tests := []struct {
		query string
		want  map[string]int64
	}{
		{"group=service", map[string]int64{
			"service: api": 20, "service: api;main;serve;parse": 7, "service: api;main;serve;encode": 9,
			"service: db": 5, "service: db;main;query": 4, "service: db;main;vacuum": 1,
		}},
		// comm is a sample label of w3 only: api's samples have none.
		{"group=comm", map[string]int64{
			"process: (none)": 20, "process: postgres": 4, "process: autovacuum": 1, "process: postgres;main;query": 4,
		}},
		// pid: a window label of w1 and w2, a numeric sample label in w3.
		{"group=pid", map[string]int64{"pid: 10": 20, "pid: 77": 4, "pid: 78": 1}},
		// Filters and grouping together.
		{"group=comm&service=db", map[string]int64{"process: postgres": 4, "process: autovacuum": 1}},
	}
	for _, tt := range tests {
		var r fgResponse
		getJSON(t, h, "/api/flamegraph?"+tt.query, &r)
		got := r.paths(t)
		for p, v := range tt.want {
			if got[p] != v {
				t.Errorf("%s: %s = %d, want %d (paths %v)", tt.query, p, got[p], v, got)
			}
		}
		for _, c := range r.Root.C {
			if k := r.Kinds[r.FrameKinds[c.F]]; k != "group" {
				t.Errorf("%s: root child %s of kind %s, want group", tt.query, r.Names[c.F], k)
			}
		}
		var top struct{ Rows []topRow }
		getJSON(t, h, "/api/top?"+tt.query, &top)
		for _, row := range top.Rows {
			if row.Kind == "group" || strings.Contains(row.Name, ": ") {
				t.Errorf("%s: top lists %q (%s)", tt.query, row.Name, row.Kind)
			}
		}
	}
	if code, body := get(t, h, "/api/flamegraph?group=color"); code != 400 || !strings.Contains(string(body), "group") {
		t.Errorf("group=color: %d %s", code, body)
	}
}

type sandwichResponse struct {
	Fn      string
	Found   bool
	Total   int64
	Callers fgResponse
	Callees fgResponse
}

// TestSandwich: the callers and callees of one function, each stack once
// even when the function recurs in it, from a tree whose answer is known.
func TestSandwich(t *testing.T) {
	m := &memSource{}
	m.add("w", t0, 10*time.Second, map[string]string{"service_name": "app"}, []stack{
		{frames: []string{"main", "a", "leaf"}, v: 3},
		{frames: []string{"main", "b", "leaf"}, v: 1},
		{frames: []string{"main", "leaf", "x"}, v: 2},
		{frames: []string{"main", "leaf", "leaf", "y"}, v: 5}, // recursion: once
		{frames: []string{"leaf"}, v: 4},                      // a root itself
		{frames: []string{"main", "other"}, v: 7},
	})
	h := NewHandler(m, Options{})
	var r sandwichResponse
	getJSON(t, h, "/api/sandwich?fn=leaf", &r)
	if !r.Found || r.Fn != "leaf" || r.Total != 22 {
		t.Fatalf("found %v fn %q total %d, want true leaf 22", r.Found, r.Fn, r.Total)
	}
	wantCallers := map[string]int64{
		"leaf": 15, "leaf;a": 3, "leaf;a;main": 3, "leaf;b": 1, "leaf;b;main": 1, "leaf;main": 7,
	}
	wantCallees := map[string]int64{
		"leaf": 15, "leaf;x": 2, "leaf;leaf": 5, "leaf;leaf;y": 5,
	}
	for side, c := range map[string]struct {
		r    *fgResponse
		want map[string]int64
	}{"callers": {&r.Callers, wantCallers}, "callees": {&r.Callees, wantCallees}} {
		got := c.r.paths(t)
		if len(got) != len(c.want) {
			t.Errorf("%s: paths %v, want %v", side, got, c.want)
		}
		for p, v := range c.want {
			if got[p] != v {
				t.Errorf("%s: %s = %d, want %d", side, p, got[p], v)
			}
		}
	}
	r = sandwichResponse{}
	getJSON(t, h, "/api/sandwich?fn=nothing", &r)
	if r.Found || r.Callers.Root.T != 0 || len(r.Callees.Root.C) != 0 {
		t.Errorf("fn=nothing: found %v, callers %d, callees %v", r.Found, r.Callers.Root.T, r.Callees.Root.C)
	}
	if code, _ := get(t, h, "/api/sandwich"); code != 400 {
		t.Errorf("no fn: %d, want 400", code)
	}
}

// TestLabelsPartial: windows whose pid values are too many to be stored
// are opened newest first, at most maxLabelOpens of them; the pid list
// then says it is partial, and names the newest windows' pids.
func TestLabelsPartial(t *testing.T) {
	m := &memSource{}
	n := maxLabelOpens + 10
	for i := range n {
		m.add(fmt.Sprint("w", i), t0.Add(time.Duration(i)*10*time.Second), 10*time.Second, map[string]string{"service_name": "svc"}, []stack{
			{frames: []string{"main"}, v: 1, labels: map[string]string{"comm": "worker"}, pid: int64(1000 + i)},
		})
		w := &m.windows[len(m.windows)-1]
		w.Values = map[string][]string{"comm": {"worker"}, "pid": {}} // pid: too many to list
		w.ValuesComplete = true
	}
	h := NewHandler(m, Options{})
	var got struct {
		Pid     []string
		Comm    []string
		Partial map[string]bool
	}
	getJSON(t, h, "/api/labels", &got)
	if m.opens != maxLabelOpens {
		t.Errorf("%d windows opened, want %d", m.opens, maxLabelOpens)
	}
	if !got.Partial["pid"] || got.Partial["comm"] || len(got.Pid) != maxLabelOpens {
		t.Errorf("partial %v, %d pids; want pid partial with %d", got.Partial, len(got.Pid), maxLabelOpens)
	}
	for _, p := range got.Pid {
		if v, _ := strconv.Atoi(p); v < 1000+n-maxLabelOpens {
			t.Errorf("pid %s listed: not of the %d newest windows", p, maxLabelOpens)
		}
	}
	if fmt.Sprint(got.Comm) != "[worker]" {
		t.Errorf("comm list %v", got.Comm)
	}
	// One service's windows are as many: the same bound.
	m.opens = 0
	getJSON(t, h, "/api/labels?service=svc", &got)
	if m.opens > maxLabelOpens {
		t.Errorf("with a service: %d windows opened", m.opens)
	}
}

// TestReturnMemory: with Options.ReturnMemory, the handler returns freed
// memory to the OS (a forced collection, as debug.FreeOSMemory makes)
// once the last request in flight has ended, and not while one is.
func TestReturnMemory(t *testing.T) {
	forced := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	slow := &returner{after: 20 * time.Millisecond, next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
	})}
	n0 := forced()
	done := make(chan struct{})
	go func() {
		slow.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/slow", nil))
		close(done)
	}()
	<-entered
	slow.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	time.Sleep(200 * time.Millisecond)
	if n := forced(); n != n0 {
		t.Errorf("%d forced collections while a request was in flight", n-n0)
	}
	close(release)
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for forced() == n0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if forced() == n0 {
		t.Error("no memory returned after the last request")
	}

	// NewHandler sets it up only when asked.
	if _, ok := NewHandler(testSource(), Options{ReturnMemory: time.Second}).(*returner); !ok {
		t.Error("ReturnMemory set: NewHandler did not wrap its handler")
	}
	if _, ok := NewHandler(testSource(), Options{}).(*returner); ok {
		t.Error("ReturnMemory unset: NewHandler wrapped its handler")
	}
}

// TestLoadBudget: the loaders of one request hold no more windows than
// loadBudgetBytes of stored bytes allows, besides the one the caller takes
// next (a large window is loaded alone), and small windows are loaded
// ahead of the caller, two per loader; every window comes out in order.
func TestLoadBudget(t *testing.T) {
	for _, c := range []struct {
		name      string
		bytes     int64
		wantAhead int // windows opened before the caller takes any
	}{
		{"large", loadBudgetBytes/2 + 1, 1},
		{"half", loadBudgetBytes / 2, 2},
		{"small", 0, 2 * 3}, // 3 loaders
	} {
		t.Run(c.name, func(t *testing.T) {
			src := &memSource{}
			var sel []selected
			for i := range 12 {
				id := fmt.Sprintf("w%d", i)
				src.add(id, t0.Add(time.Duration(i)*10*time.Second), 10*time.Second, map[string]string{"service_name": "a"}, []stack{{frames: []string{"main"}, v: int64(i + 1)}})
				w := src.windows[i]
				w.Bytes = c.bytes
				sel = append(sel, selected{w: w})
			}
			h := &handler{src: src, opts: Options{Loaders: 3}, cache: newCache(64, 16<<20)}
			next, stop := h.load(context.Background(), sel)
			defer stop()
			opened := func() int {
				time.Sleep(50 * time.Millisecond) // the loaders go as far as they may
				src.mu.Lock()
				defer src.mu.Unlock()
				return src.opens
			}
			// As many as the budget allows are loaded ahead (however busy
			// the machine, in time), and no more.
			for end := time.Now().Add(10 * time.Second); opened() < c.wantAhead && time.Now().Before(end); {
			}
			if n := opened(); n != c.wantAhead {
				t.Errorf("%d windows opened before the first was taken, want %d", n, c.wantAhead)
			}
			for i := range sel {
				l, err := next()
				if err != nil {
					t.Fatal(err)
				}
				if v := l.values[0]; v != int64(i+1) {
					t.Fatalf("window %d came out as window %d", i, v-1)
				}
				if n := opened(); n > min(i+1+c.wantAhead, len(sel)) {
					t.Fatalf("%d windows opened after %d were taken, want at most %d", n, i+1, i+1+c.wantAhead)
				}
			}
		})
	}
}
