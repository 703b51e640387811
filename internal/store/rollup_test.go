package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/web"
)

// pidProfile is cpuProfile(fn, n) with its samples split between two
// processes: n-1 samples of pid 100, 1 of pid 200.
func pidProfile(fn string, n int64, start time.Time) *profile.Profile {
	p := cpuProfile(fn, n, start)
	p.DurationNanos = int64(15 * time.Second)
	s := p.Sample[0]
	s.Value = []int64{(n - 1) * 10_000_000, n - 1}
	s.NumLabel = map[string][]int64{"pid": {100}, "tid": {100 + start.Unix()%3}}
	p.Sample = append(p.Sample, &profile.Sample{Location: s.Location, Value: []int64{10_000_000, 1}, NumLabel: map[string][]int64{"pid": {200}, "tid": {200}}})
	return p
}

var h0 = time.Date(2026, 3, 4, 4, 0, 0, 0, time.UTC)

// fillRollupStore writes windows of 15 s for two services from h0 for
// 2 h 5 min; window i of service "a" has 2+i%7 samples, of "b" 3.
// It returns the store, with its clock at h0+3h, and the samples put.
func fillRollupStore(t *testing.T, dir string) (*Store, int64) {
	t.Helper()
	s := open(t, dir, Options{})
	s.now = func() time.Time { return h0.Add(3 * time.Hour) }
	var total int64
	for i := range 500 {
		start, items, n := twoServices(i)
		if err := s.PutWindow(start, 15*time.Second, items); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return s, total
}

// twoServices is window i of fillRollupStore, from h0 on: its start, its
// targets (service "a" with 2+i%7 samples, "b" with 3) and their samples.
func twoServices(i int) (time.Time, []Item, int64) {
	start := h0.Add(time.Duration(i) * 15 * time.Second)
	na := 2 + int64(i%7)
	items := []Item{
		{Labels: map[string]string{"service_name": "a"}, Profile: pidProfile("fa", na, start)},
		{Labels: map[string]string{"service_name": "b"}, Profile: pidProfile("fb", 3, start)},
	}
	return start, items, na + 3
}

func sumSamples(ws []web.Window) int64 {
	var n int64
	for _, w := range ws {
		n += w.Samples
	}
	return n
}

// TestRollups builds the rollups of two hours and five minutes of
// windows and checks each level's view: the same samples as the
// windows, from fewer, longer windows, with the sample labels kept.
func TestRollups(t *testing.T) {
	dir := t.TempDir()
	s, total := fillRollupStore(t, dir)
	ctx := context.Background()
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// Per service and of both: 25 periods of 5 min (the last ends at
	// 06:05), 2 hours (hour 06 has not ended at 07:00 minus the grace),
	// no day.
	st := s.Stats()
	if st.Windows != 1000 || st.Rollups != 3*(25+2) || st.RollupsWritten != 3*(25+2) || st.RollupErrors != 0 {
		t.Fatalf("stats %+v, want 1000 windows and 81 rollups", st)
	}
	all := func(k int) []web.Window {
		ws, err := s.WindowsAt(ctx, h0.Add(-time.Hour), h0.Add(5*time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	for k, want := range []int{1000, 50, 6, 6} {
		ws := all(k)
		if len(ws) != want || sumSamples(ws) != total {
			t.Errorf("level %d: %d windows, %d samples; want %d windows, %d samples", k, len(ws), sumSamples(ws), want, total)
		}
	}
	// The hour rollup of service a at 05:00 against its windows.
	ws := all(2)
	i := slices.IndexFunc(ws, func(w web.Window) bool {
		return w.Labels["service_name"] == "a" && w.Start.Equal(h0.Add(time.Hour))
	})
	if i < 0 || ws[i].Duration != time.Hour {
		t.Fatalf("no hour rollup of a at 05:00 in %v", ws)
	}
	raw, _ := s.Windows(ctx, h0.Add(time.Hour), h0.Add(2*time.Hour))
	var want int64
	for _, w := range raw {
		if w.Labels["service_name"] == "a" {
			want += w.Samples
		}
	}
	p, err := s.Open(ctx, ws[i].ID)
	if err != nil {
		t.Fatal(err)
	}
	byPid := map[int64]int64{}
	for _, smp := range p.Sample {
		byPid[smp.NumLabel["pid"][0]] += smp.Value[1]
		if _, ok := smp.NumLabel["tid"]; ok {
			t.Errorf("hour rollup keeps thread ids: %v", smp.NumLabel)
			break
		}
	}
	if ws[i].Samples != want || byPid[100]+byPid[200] != want || byPid[200] != 240 {
		t.Errorf("hour rollup: %d samples listed, by pid %v; want %d, 240 of pid 200", ws[i].Samples, byPid, want)
	}
	if p.TimeNanos != h0.Add(time.Hour).UnixNano() || p.DurationNanos != int64(time.Hour) {
		t.Errorf("hour rollup profile spans %d+%d", p.TimeNanos, p.DurationNanos)
	}
	if got := ws[i].Values["pid"]; !slices.Equal(got, []string{"100", "200"}) {
		t.Errorf("hour rollup lists pids %v", got)
	}

	// The merged views: one rollup of both services per period, its
	// samples labelled with their service.
	merged := func(k int) []web.Window {
		ws, err := s.MergedAt(ctx, h0.Add(-time.Hour), h0.Add(5*time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	for k, want := range map[int]int{1: 25, 2: 3, 3: 3} {
		ws := merged(k)
		if len(ws) != want || sumSamples(ws) != total {
			t.Errorf("merged level %d: %d windows, %d samples; want %d windows, %d samples", k, len(ws), sumSamples(ws), want, total)
		}
		for _, w := range ws {
			// The store's mark of the rollup is not the viewer's to see.
			if _, marked := w.Labels[allTargetsLabel]; marked || w.Labels["service_name"] != "" || !slices.Equal(w.Values["service_name"], []string{"a", "b"}) {
				t.Errorf("merged level %d: window %v %v", k, w.Labels, w.Values)
				break
			}
		}
	}
	ws = merged(2)
	p, err = s.Open(ctx, ws[1].ID) // 05:00
	if err != nil {
		t.Fatal(err)
	}
	byService := map[string]int64{}
	for _, smp := range p.Sample {
		byService[smp.Label["service_name"][0]] += smp.Value[1]
	}
	if byService["a"] != want || byService["b"] != 240*3 {
		t.Errorf("merged hour at 05:00: samples by service %v, want a %d, b %d", byService, want, 240*3)
	}

	// Reopened, the rollups are read back and not built again.
	s.Close()
	s = open(t, dir, Options{})
	s.now = func() time.Time { return h0.Add(3 * time.Hour) }
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Rollups != 81 || st.RollupsWritten != 0 || st.Corrupt != 0 {
		t.Errorf("reopened: %+v, want the 81 rollups read back", st)
	}
	if ws := all(3); len(ws) != 6 || sumSamples(ws) != total {
		t.Errorf("reopened: level 3 has %d windows, %d samples", len(ws), sumSamples(ws))
	}
	s.Close()
}

// TestRollupUnreadableWindow damages one window: its target's rollup of
// that period is not built (and counted), and the coarser views show
// that target's windows there instead, so no sample is lost or counted
// twice.
func TestRollupUnreadableWindow(t *testing.T) {
	dir := t.TempDir()
	s, total := fillRollupStore(t, dir)
	ctx := context.Background()
	ws, _ := s.Windows(ctx, h0.Add(10*time.Minute), h0.Add(10*time.Minute+time.Nanosecond))
	if len(ws) != 2 {
		t.Fatalf("%d windows at 04:10", len(ws))
	}
	s.mu.RLock()
	e := s.byID[ws[0].ID]
	s.mu.RUnlock()
	path := filepath.Join(dir, e.files.hour, e.files.data)
	data, _ := os.ReadFile(path)
	data[e.off+e.pbSize/2] ^= 0xff
	os.WriteFile(path, data, 0o600)

	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	// The damaged target has no rollup at 04:10 nor at 04:00 (its hour:
	// merged from the windows of 04:10 too), and neither period has one
	// of all targets.
	st := s.Stats()
	if st.RollupErrors != 2 || st.Rollups != 3*(25+2)-4 {
		t.Errorf("stats %+v, want 2 rollup errors and 77 rollups", st)
	}
	for k, want := range []int{1000, 50 - 1 + 20, 6 - 1 + 11 + 20, 6 - 1 + 11 + 20} {
		ws, err := s.WindowsAt(ctx, h0, h0.Add(3*time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != want || sumSamples(ws) != total {
			t.Errorf("level %d: %d windows, %d samples; want %d windows, %d samples", k, len(ws), sumSamples(ws), want, total)
		}
	}
	// Merged: at level 1, one rollup of both for each 5 minutes but
	// 04:10, which shows the other target's rollup and the damaged one's
	// 20 windows. At level 2, hour 04 shows the other target's hour
	// rollup (the 5-minute rollups of both would count it twice) and the
	// damaged one's 11 rollups and 20 windows; 05:00 and 06:00 one of
	// both.
	for k, want := range map[int]int{1: 24 + 1 + 20, 2: 1 + 11 + 20 + 1 + 1} {
		ws, err := s.MergedAt(ctx, h0, h0.Add(3*time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != want || sumSamples(ws) != total {
			t.Errorf("merged level %d: %d windows, %d samples; want %d windows, %d samples", k, len(ws), sumSamples(ws), want, total)
		}
	}
	s.Close()
}

// TestRollupsBackground checks that an agent's store builds rollups by
// itself once a period has ended: by the real clock, every period of
// 2026-03-04 has, the day too.
func TestRollupsBackground(t *testing.T) {
	dir := t.TempDir()
	s, _ := fillRollupStore(t, dir)
	s.Close()
	s, err := Open(dir, Options{MaxAge: 100 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deadline := time.Now().Add(time.Minute)
	const want = 3 * (25 + 3 + 1)
	for s.Stats().Rollups < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Stats(); st.Rollups != want {
		t.Errorf("after a minute in the background: %+v, want %d rollups", st, want)
	}
}

// TestViewerReadsRollups serves the store to the viewer with small
// window budgets: a selection of more than FewWindows windows is answered
// from the finest level with few, else (with a filter) the finest that
// fits MaxWindows or (without) the one with the fewest, with every
// sample, and says which level it used; MaxWindows only refuses what no
// level fits.
func TestViewerReadsRollups(t *testing.T) {
	s, total := fillRollupStore(t, t.TempDir())
	defer s.Close()
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	var totalA int64
	for i := range 500 {
		totalA += 2 + int64(i%7)
	}
	for _, c := range []struct {
		few, max int
		query    string
		res      time.Duration
		windows  int
		total    int64
	}{
		// Without a filter, a window counts by its size (web's windowCost)
		// against FewWindows: the windows (none of them merged here)...
		{4000, 5000, "", 0, 1000, total},
		// ... or the rollups of both services.
		{100, 5000, "", 5 * time.Minute, 25, total},
		{20, 5000, "", time.Hour, 3, total},
		{2, 5000, "", time.Hour, 3, total}, // none few: the fewest
		{2, 2, "", time.Hour, 0, 0},        // refused
		// With one, each service's own; none few: the finest that fits.
		{1000, 5000, "?service=a", 0, 500, totalA},
		{20, 5000, "?service=a", time.Hour, 3, totalA},
		{2, 5000, "?service=a", 0, 500, totalA},
		{2, 30, "?service=a", 5 * time.Minute, 25, totalA},
	} {
		h := web.NewHandler(s, web.Options{FewWindows: c.few, MaxWindows: c.max})
		for _, api := range []string{"flamegraph", "top"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/"+api+c.query, nil))
			if c.windows == 0 {
				if rec.Code != 400 {
					t.Errorf("limits %d/%d: api/%s: status %d, want 400", c.few, c.max, api, rec.Code)
				}
				continue
			}
			var d struct {
				Windows    int   `json:"windows"`
				Resolution int64 `json:"resolution"`
				Total      int64 `json:"total"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &d); rec.Code != 200 || err != nil {
				t.Fatalf("limits %d/%d: api/%s: status %d, %v: %s", c.few, c.max, api, rec.Code, err, rec.Body)
			}
			// The profiles' "samples" values, the viewer's unit.
			if d.Windows != c.windows || d.Resolution != c.res.Milliseconds() || d.Total != c.total {
				t.Errorf("limits %d/%d: api/%s%s: %d windows at resolution %d ms, %d samples; want %d at %d, %d",
					c.few, c.max, api, c.query, d.Windows, d.Resolution, d.Total, c.windows, c.res.Milliseconds(), c.total)
			}
		}
	}
}

// TestTimelineReadsRollups: a timeline whose buckets are as long as a
// level's period reads that level (fewer windows, the same counts); finer
// buckets read the windows.
func TestTimelineReadsRollups(t *testing.T) {
	s, total := fillRollupStore(t, t.TempDir())
	defer s.Close()
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := web.NewHandler(s, web.Options{})
	for _, c := range []struct {
		step    string
		windows int
	}{
		{"1m", 1000}, // each service's windows
		{"5m", 50},   // its 5-minute rollups
		{"15m", 50},
		{"2h", 6}, // its hourly ones
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/timeline?step="+c.step, nil))
		var d struct {
			Windows int       `json:"windows"`
			Counts  []float64 `json:"counts"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &d); rec.Code != 200 || err != nil {
			t.Fatalf("step %s: status %d, %v: %s", c.step, rec.Code, err, rec.Body)
		}
		var sum float64
		for _, n := range d.Counts {
			sum += n
		}
		if d.Windows != c.windows || int64(sum+0.5) != total {
			t.Errorf("step %s: %d windows counting %.1f samples, want %d counting %d", c.step, d.Windows, sum, c.windows, total)
		}
	}
}

// TestMergeBatched: merging a few profiles at a time gives what one merge
// of all of them gives (each function's and each pid's samples), with at
// most mergeBatch profiles fetched ahead of the merge.
func TestMergeBatched(t *testing.T) {
	const n = 3*mergeBatch + 2
	var ps []*profile.Profile
	for i := range n {
		p := pidProfile(fmt.Sprint("f", i%5), int64(2+i%4), h0.Add(time.Duration(i)*15*time.Second))
		p.Sample[1].NumLabel["pid"] = []int64{int64(300 + i)}
		ps = append(ps, p)
	}
	sums := func(p *profile.Profile) map[string]int64 {
		m := map[string]int64{}
		for _, s := range p.Sample {
			m[s.Location[0].Line[0].Function.Name] += s.Value[1]
			m[fmt.Sprint("pid", s.NumLabel["pid"])] += s.Value[1]
		}
		return m
	}
	copies := make([]*profile.Profile, n)
	for i, p := range ps {
		copies[i] = p.Copy()
	}
	all, err := profile.Merge(copies)
	if err != nil {
		t.Fatal(err)
	}
	fetched := 0
	got, err := mergeBatched(n, func(i int) (*profile.Profile, error) {
		if i != fetched {
			t.Errorf("profile %d asked for, want %d", i, fetched)
		}
		fetched++
		return ps[i], nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fetched != n || !maps.Equal(sums(got), sums(all)) {
		t.Errorf("%d fetched; batched %v, want %v", fetched, sums(got), sums(all))
	}
	if err := got.CheckValid(); err != nil {
		t.Error(err)
	}
	wantErr := errors.New("unreadable")
	if _, err := mergeBatched(n, func(i int) (*profile.Profile, error) {
		if i == mergeBatch+1 {
			return nil, wantErr
		}
		return ps[i], nil
	}); !errors.Is(err, wantErr) {
		t.Errorf("a failed read: %v, want %v", err, wantErr)
	}
}

// mergedOf merges the items' profiles as the agent does for
// PutWindowMerged: each sample labelled with its target's labels.
func mergedOf(t *testing.T, items []Item) *profile.Profile {
	t.Helper()
	var ps []*profile.Profile
	for _, it := range items {
		c := it.Profile.Copy()
		for _, smp := range c.Sample {
			smp.Label = map[string][]string{}
			for k, v := range it.Labels {
				smp.Label[k] = []string{v}
			}
		}
		ps = append(ps, c)
	}
	m, err := profile.Merge(ps)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMergedWindows writes windows of two services with their merge
// (PutWindowMerged) and checks what each view lists: the targets alone
// at level 0, one merge per window where no rollup holds the period,
// the same samples at every level, before and after a reopen, and the
// targets again where a later pack replaced one of them.
func TestMergedWindows(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	end := h0.Add(500 * 15 * time.Second) // 06:05
	s.now = func() time.Time { return end.Add(20 * time.Second) }
	ctx := context.Background()
	var total int64
	for i := range 500 {
		start := h0.Add(time.Duration(i) * 15 * time.Second)
		na := 2 + int64(i%7)
		items := []Item{
			{Labels: map[string]string{"service_name": "a", "host": "h"}, Profile: pidProfile("fa", na, start)},
			{Labels: map[string]string{"service_name": "b", "host": "h"}, Profile: pidProfile("fb", 3, start)},
		}
		if err := s.PutWindowMerged(start, 15*time.Second, items, mergedOf(t, items)); err != nil {
			t.Fatal(err)
		}
		total += na + 3
	}
	check := func(what string, k int, mergedView bool, wantN int, wantTotal int64) []web.Window {
		t.Helper()
		var ws []web.Window
		var err error
		if mergedView {
			ws, err = s.MergedAt(ctx, h0.Add(-time.Hour), h0.Add(5*time.Hour), k)
		} else {
			ws, err = s.WindowsAt(ctx, h0.Add(-time.Hour), h0.Add(5*time.Hour), k)
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != wantN || sumSamples(ws) != wantTotal {
			t.Errorf("%s: level %d (merged %v): %d windows, %d samples; want %d, %d", what, k, mergedView, len(ws), sumSamples(ws), wantN, wantTotal)
		}
		return ws
	}
	checkAll := func(what string) {
		t.Helper()
		if st := s.Stats(); st.Windows != 1000 || st.Merged != 500 {
			t.Errorf("%s: stats %+v, want 1000 windows and 500 merged", what, st)
		}
		check(what, 0, false, 1000, total)
		ws := check(what, 0, true, 500, total)
		w := ws[7]
		if !maps.Equal(w.Labels, map[string]string{"host": "h"}) || !slices.Equal(w.Values["service_name"], []string{"a", "b"}) {
			t.Errorf("%s: merged window labels %v, values %v", what, w.Labels, w.Values)
		}
		p, err := s.Open(ctx, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		byService := map[string]int64{}
		for _, smp := range p.Sample {
			if smp.Label["host"] != nil {
				t.Errorf("%s: a merged sample keeps the shared label: %v", what, smp.Label)
			}
			byService[smp.Label["service_name"][0]] += smp.Value[1]
		}
		if byService["a"] != 2 || byService["b"] != 3 {
			t.Errorf("%s: merged window 7 by service %v, want a 2, b 3", what, byService)
		}
	}
	checkAll("written")
	s.Close()
	s = open(t, dir, Options{})
	s.now = func() time.Time { return end.Add(20 * time.Second) }
	checkAll("reopened")

	// Rollups up to 06:00 (the last period is still open): the merged
	// views read the rollups of all targets, then the windows' merges.
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	for k, n := range []int{1000, 2*24 + 40, 2*2 + 40, 2*2 + 40} {
		check("compacted", k, false, n, total)
	}
	for k, n := range []int{500, 24 + 20, 2 + 20, 2 + 20} {
		check("compacted", k, true, n, total)
	}

	// A later pack of one window's start replaces target a: that
	// window's merge no longer stands for it.
	start := h0.Add(499 * 15 * time.Second)
	if err := s.PutWindow(start, 15*time.Second, []Item{{Labels: map[string]string{"service_name": "a", "host": "h"}, Profile: pidProfile("fa", 50, start)}}); err != nil {
		t.Fatal(err)
	}
	total += 50 - (2 + 499%7)
	check("replaced", 0, true, 499+2, total)
	check("replaced", 1, true, 24+19+2, total)

	// A merge that does not hold the targets' samples is not stored;
	// the window is.
	start = end
	items := []Item{
		{Labels: map[string]string{"service_name": "a"}, Profile: pidProfile("fa", 4, start)},
		{Labels: map[string]string{"service_name": "b"}, Profile: pidProfile("fb", 3, start)},
	}
	wrong := mergedOf(t, items[:1])
	if err := s.PutWindowMerged(start, 15*time.Second, items, wrong); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Windows != 1002 || st.Merged != 500 {
		t.Errorf("after a wrong merge: stats %+v, want 1002 windows and 500 merged", st)
	}
	// The merge's label is the store's.
	items[0].Labels = map[string]string{"service_name": "a", allTargetsLabel: "x"}
	if err := s.PutWindow(start.Add(time.Minute), 15*time.Second, items); err == nil {
		t.Error("a target with the label of merges was stored")
	}
	s.Close()
}

// TestRollupCapsPids writes windows of a service whose samples come from
// 300 processes, pid i with i+1 samples in each window: its rollups keep
// the pids of the maxRollupPids processes with the most samples, and the
// others' samples without a pid, merged, so that a rollup stays small on
// a host that starts processes all the time; no sample is lost.
func TestRollupCapsPids(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	s.now = func() time.Time { return h0.Add(2 * time.Hour) }
	const procs = 300
	var total int64
	for i := range 20 { // 5 minutes
		start := h0.Add(time.Duration(i) * 15 * time.Second)
		p := cpuProfile("f", 1, start)
		p.Sample = nil
		for pid := range procs {
			n := int64(pid + 1)
			p.Sample = append(p.Sample, &profile.Sample{
				Location: p.Location, Value: []int64{n * 10_000_000, n},
				NumLabel: map[string][]int64{"pid": {int64(pid)}, "tid": {int64(pid)}},
			})
			total += n
		}
		if err := s.Put(start, 15*time.Second, map[string]string{"service_name": "a"}, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	ws, err := s.WindowsAt(context.Background(), h0, h0.Add(time.Hour), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Samples != total || len(ws[0].Values["pid"]) != maxRollupPids || !ws[0].ValuesComplete {
		t.Fatalf("rollups %+v, want one of %d samples listing %d pids", ws, total, maxRollupPids)
	}
	p, err := s.Open(context.Background(), ws[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	byPid := map[int64]int64{}
	var unlabelled, sum int64
	for _, smp := range p.Sample {
		sum += smp.Value[1]
		if pid := smp.NumLabel["pid"]; len(pid) == 1 {
			byPid[pid[0]] += smp.Value[1]
		} else {
			unlabelled++
		}
		if smp.NumLabel["tid"] != nil {
			t.Fatalf("rollup sample keeps its thread: %v", smp.NumLabel)
		}
	}
	if sum != total || len(p.Sample) != maxRollupPids+1 || unlabelled != 1 || len(byPid) != maxRollupPids {
		t.Errorf("rollup: %d samples (%d without pid), %d pids, %d counted; want %d samples, %d pids, %d counted",
			len(p.Sample), unlabelled, len(byPid), sum, maxRollupPids+1, maxRollupPids, total)
	}
	for pid := range byPid {
		if pid < procs-maxRollupPids || byPid[pid] != 20*(pid+1) {
			t.Errorf("pid %d kept with %d samples, want only the %d busiest, whole", pid, byPid[pid], maxRollupPids)
			break
		}
	}
}

// TestViewerByPidSkipsMerges: merges of all targets keep no pids (the
// agent's do not), so what needs a pid — a tree grouped by pid, the
// label lists — reads the targets' windows and rollups at every level,
// never a merge: no sample falls under "pid: (none)" in the last
// minutes that no rollup holds yet.
func TestViewerByPidSkipsMerges(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	end := h0.Add(500 * 15 * time.Second) // 06:05
	s.now = func() time.Time { return end.Add(20 * time.Second) }
	var total int64
	for i := range 500 {
		start, items, n := twoServices(i)
		m := mergedOf(t, items)
		for _, smp := range m.Sample {
			smp.NumLabel = nil
		}
		if err := s.PutWindowMerged(start, 15*time.Second, items, m); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Level 0 lists 1000 windows, level 1 88 (rollups of 5 minutes, and
	// the windows of the last 5): FewWindows 100 reads level 1.
	h := web.NewHandler(s, web.Options{FewWindows: 100})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/flamegraph?group=pid", nil))
	var fg struct {
		Resolution int64 `json:"resolution"`
		Total      int64 `json:"total"`
		Names      []string
		Root       struct {
			C []struct {
				F int   `json:"f"`
				T int64 `json:"t"`
			} `json:"c"`
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &fg); rec.Code != 200 || err != nil {
		t.Fatalf("group=pid: status %d, %v: %s", rec.Code, err, rec.Body)
	}
	if fg.Resolution != (5*time.Minute).Milliseconds() || fg.Total != total {
		t.Errorf("group=pid: resolution %d ms, %d samples; want 300000, %d", fg.Resolution, fg.Total, total)
	}
	groups := map[string]int64{}
	for _, c := range fg.Root.C {
		groups[fg.Names[c.F]] += c.T
	}
	// pidProfile: pid 200 has one sample per window and target.
	if len(groups) != 2 || groups["pid: 200"] != 1000 || groups["pid: 100"] != total-1000 {
		t.Errorf("group=pid: groups %v, want pid: 100 %d and pid: 200 1000", groups, total-1000)
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/labels", nil))
	var labels map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &labels); rec.Code != 200 || err != nil {
		t.Fatalf("labels: status %d, %v: %s", rec.Code, err, rec.Body)
	}
	var pids, services []string
	if json.Unmarshal(labels["pid"], &pids) != nil || json.Unmarshal(labels["service"], &services) != nil ||
		!slices.Equal(pids, []string{"100", "200"}) || !slices.Equal(services, []string{"a", "b"}) {
		t.Errorf("labels %s, want pids 100, 200 and services a, b", rec.Body)
	}
}

// wideProfile is a window of one service whose samples run in n
// functions of its own, one sample each: a profile of some size.
func wideProfile(service string, n int, start time.Time) *profile.Profile {
	p := cpuProfile(service+"-0", 1, start)
	p.DurationNanos = int64(15 * time.Second)
	p.Sample, p.Location, p.Function = nil, nil, nil
	for i := range n {
		name := fmt.Sprintf("%s.function%04d(%x)", service, i, i*7919)
		f := &profile.Function{ID: uint64(i + 1), Name: name, SystemName: name}
		loc := &profile.Location{ID: uint64(i + 1), Address: 0x1000 + uint64(i)*16, Line: []profile.Line{{Function: f, Line: 3}}}
		p.Function = append(p.Function, f)
		p.Location = append(p.Location, loc)
		p.Sample = append(p.Sample, &profile.Sample{Location: []*profile.Location{loc}, Value: []int64{10_000_000, 1}})
	}
	return p
}

// TestViewerCountsMergesBySize: in a list of merges of all targets, a
// merge counts by its stored size against FewWindows. Merges of a window
// of two services of 2000 functions each weigh a dozen target windows:
// the last 15 minutes (60 merges) are read from the 5-minute rollups,
// where counting a merge as 4 windows read the 60 merges.
func TestViewerCountsMergesBySize(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	defer s.Close()
	end := h0.Add(30 * time.Minute)
	s.now = func() time.Time { return end.Add(90 * time.Second) }
	var total int64
	for w := h0; w.Before(end); w = w.Add(15 * time.Second) {
		items := []Item{
			{Labels: map[string]string{"service_name": "a"}, Profile: wideProfile("a", 2000, w)},
			{Labels: map[string]string{"service_name": "b"}, Profile: wideProfile("b", 2000, w)},
		}
		if err := s.PutWindowMerged(w, 15*time.Second, items, mergedOf(t, items)); err != nil {
			t.Fatal(err)
		}
		total += 4000
	}
	if err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	ws, err := s.MergedAt(context.Background(), end.Add(-15*time.Minute), end, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 60 || ws[0].Bytes < 4*16<<10 {
		t.Fatalf("%d merges of the last 15 minutes, the first of %d bytes; want 60 of more than four target windows' 16 KiB", len(ws), ws[0].Bytes)
	}
	h := web.NewHandler(s, web.Options{})
	q := fmt.Sprintf("/api/flamegraph?from=%d&to=%d", end.Add(-15*time.Minute).UnixMilli(), end.UnixMilli())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", q, nil))
	var d struct {
		Windows    int   `json:"windows"`
		Resolution int64 `json:"resolution"`
		Total      int64 `json:"total"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &d); rec.Code != 200 || err != nil {
		t.Fatalf("status %d, %v: %s", rec.Code, err, rec.Body)
	}
	if d.Resolution != (5*time.Minute).Milliseconds() || d.Windows != 3 || d.Total != total/2 {
		t.Errorf("last 15 minutes: %d windows at resolution %d ms, %d samples; want the 3 merged 5-minute rollups, %d samples", d.Windows, d.Resolution, d.Total, total/2)
	}
}
