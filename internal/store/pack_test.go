package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// window builds the items of a window of n targets; target i has labels
// service_name=svc<i%7>, pid=<i> and a profile of i+1 samples of fn<i>.
func window(start time.Time, n int) []Item {
	items := make([]Item, n)
	for i := range items {
		items[i] = Item{
			Labels:  map[string]string{"service_name": "svc" + strconv.Itoa(i%7), "pid": strconv.Itoa(i)},
			Profile: cpuProfile("fn"+strconv.Itoa(i), int64(i+1), start),
		}
	}
	return items
}

func putWindow(t *testing.T, s *Store, start time.Time, items []Item) {
	t.Helper()
	if err := s.PutWindow(start, 10*time.Second, items); err != nil {
		t.Fatal(err)
	}
}

// checkTargets checks that the store holds exactly the n targets of
// window(start, n), and that each opens to its own profile.
func checkTargets(t *testing.T, s *Store, start time.Time, n int) {
	t.Helper()
	ws, err := s.Windows(context.Background(), start, start.Add(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	var got []target
	for _, w := range ws {
		if w.Start.Equal(start) {
			got = append(got, target{w.ID, w.Labels, w.Samples})
		}
	}
	if len(got) != n {
		t.Fatalf("window %v: %d targets, want %d", start, len(got), n)
	}
	for _, w := range got {
		i, err := strconv.Atoi(w.Labels["pid"])
		if err != nil || w.Labels["service_name"] != "svc"+strconv.Itoa(i%7) || len(w.Labels) != 2 {
			t.Fatalf("target labels %v", w.Labels)
		}
		if w.ID != windowID(start, w.Labels) || w.Samples != int64(i+1) {
			t.Errorf("target %d: ID %s, %d samples", i, w.ID, w.Samples)
		}
		p, err := s.Open(context.Background(), w.ID)
		if err != nil {
			t.Fatalf("target %d: %v", i, err)
		}
		if fn := p.Function[0].Name; fn != "fn"+strconv.Itoa(i) || p.Sample[0].Value[1] != int64(i+1) || p.TimeNanos != start.UnixNano() {
			t.Errorf("target %d opens to %s with %d samples", i, fn, p.Sample[0].Value[1])
		}
	}
}

type target struct {
	ID      string
	Labels  map[string]string
	Samples int64
}

// listDir returns the names of the files in dir/hour, sorted.
func listDir(t *testing.T, dir, hour string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, hour))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPutWindowRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	starts := []time.Time{t0, t0.Add(10 * time.Second), t0.Add(20 * time.Second)} // the second crosses into hour 06
	sizes := []int{300, 1, 57}
	for i, start := range starts {
		putWindow(t, s, start, window(start, sizes[i]))
	}
	for i, start := range starts {
		checkTargets(t, s, start, sizes[i])
	}
	// Two files per window, whatever its number of targets.
	if got := fmt.Sprint(listDir(t, dir, "20260304T05")); got != "[20260304T055950.000000000Z-0.index 20260304T055950.000000000Z-0.pack]" {
		t.Errorf("hour 05 holds %s", got)
	}
	if got := len(listDir(t, dir, "20260304T06")); got != 4 {
		t.Errorf("hour 06 holds %d files, want 4", got)
	}
	st := s.Stats()
	if st.Windows != 358 || st.Puts != 358 || len(st.PutErrors) != 0 || st.Bytes <= 0 {
		t.Errorf("stats = %+v", st)
	}
	// An empty window writes nothing.
	if err := s.PutWindow(t0.Add(time.Hour), time.Second, nil); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "20260304T06", packName(t0.Add(time.Hour), 0)+".pack")); err == nil {
		t.Error("an empty window wrote a pack")
	}
	s.Close()

	s = open(t, dir, Options{})
	for i, start := range starts {
		checkTargets(t, s, start, sizes[i])
	}
	if st2 := s.Stats(); st2.Windows != 358 || st2.Bytes != st.Bytes || st2.Corrupt != 0 {
		t.Errorf("after reopening: stats = %+v, want %d bytes", st2, st.Bytes)
	}
}

func TestPutWindowInvalid(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	good := window(t0, 3)
	for _, c := range []struct {
		name  string
		items []Item
	}{
		{"nil profile", append(slices.Clone(good), Item{Labels: map[string]string{"pid": "x"}})},
		{"same labels", append(slices.Clone(good), Item{Labels: good[1].Labels, Profile: cpuProfile("x", 1, t0)})},
		{"too many labels", append(slices.Clone(good), Item{Labels: func() map[string]string {
			m := map[string]string{}
			for i := range maxLabels + 1 {
				m[strconv.Itoa(i)] = ""
			}
			return m
		}(), Profile: cpuProfile("x", 1, t0)})},
		{"labels too long", append(slices.Clone(good), Item{Labels: map[string]string{"a": strings.Repeat("x", maxLabelBytes)}, Profile: cpuProfile("x", 1, t0)})},
	} {
		if err := s.PutWindow(t0, time.Second, c.items); err == nil || errCause(err) != "invalid" {
			t.Errorf("%s: PutWindow = %v, want an invalid window", c.name, err)
		}
	}
	if err := s.PutWindow(t0, -time.Second, good); err == nil {
		t.Error("PutWindow accepted a negative duration")
	}
	if files := listDir(t, dir, "20260304T05"); len(files) != 0 {
		t.Errorf("invalid windows left files %v", files)
	}
	if st := s.Stats(); st.Windows != 0 || st.PutErrors["invalid"] != 5 {
		t.Errorf("stats = %+v", st)
	}
	s.Close()
	if err := s.PutWindow(t0, time.Second, good); !errors.Is(err, ErrClosed) {
		t.Errorf("PutWindow after Close = %v", err)
	}
}

// TestPutWindowSameStart writes windows with the same start, as an agent
// restarted within an interval does: later targets replace earlier ones of
// the same labels, and a reopened store resolves them the same way.
func TestPutWindowSameStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	first := window(t0, 4)  // pids 0..3
	second := window(t0, 6) // pids 0..5; pids 2..5 replace
	second = second[2:]     // pids 2..5
	third := window(t0, 2)  // pids 0,1: replace the rest of the first
	putWindow(t, s, t0, first)
	for i := range second {
		second[i].Profile = cpuProfile("again"+second[i].Labels["pid"], 100, t0)
	}
	putWindow(t, s, t0, second)
	check := func(when string) {
		t.Helper()
		ws, _ := s.Windows(context.Background(), t0, t0.Add(time.Second))
		var got []string
		for _, w := range ws {
			p, err := s.Open(context.Background(), w.ID)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, w.Labels["pid"]+":"+p.Function[0].Name)
		}
		slices.Sort(got)
		if fmt.Sprint(got) != "[0:fn0 1:fn1 2:again2 3:again3 4:again4 5:again5]" {
			t.Errorf("%s: %v", when, got)
		}
	}
	check("after the second window")
	if got := len(listDir(t, dir, "20260304T05")); got != 4 {
		t.Errorf("%d files, want both packs and indexes", got)
	}
	s.Close()
	s = open(t, dir, Options{})
	check("after reopening")
	if st := s.Stats(); st.Windows != 6 || st.Corrupt != 0 {
		t.Errorf("stats = %+v", st)
	}

	// Replacing the rest of the first pack deletes it.
	putWindow(t, s, t0, third)
	if got := fmt.Sprint(listDir(t, dir, "20260304T05")); got != "[20260304T055950.000000000Z-1.index 20260304T055950.000000000Z-1.pack 20260304T055950.000000000Z-2.index 20260304T055950.000000000Z-2.pack]" {
		t.Errorf("files: %s", got)
	}
	if st := s.Stats(); st.Windows != 6 || st.Bytes != dirBytes(t, dir) {
		t.Errorf("stats = %+v, disk holds %d bytes", st, dirBytes(t, dir))
	}
}

// TestPutWindowReplacesLegacy mixes both layouts in one directory.
func TestPutWindowReplacesLegacy(t *testing.T) {
	dir := t.TempDir()
	items := window(t0, 3)
	for _, it := range items {
		putLegacy(t, dir, t0, it.Labels, it.Profile)
	}
	putLegacy(t, dir, t0.Add(-time.Minute), map[string]string{"service_name": "old"}, cpuProfile("old", 1, t0))
	s := open(t, dir, Options{})
	checkTargets(t, s, t0, 3)
	if st := s.Stats(); st.Windows != 4 || st.Bytes != dirBytes(t, dir) {
		t.Errorf("stats = %+v, disk holds %d bytes", st, dirBytes(t, dir))
	}
	// The pack replaces targets 0 and 1 and deletes their files.
	putWindow(t, s, t0, window(t0, 2))
	checkTargets(t, s, t0, 3)
	if got := len(listDir(t, dir, "20260304T05")); got != 2+2+2 { // old, target 2, the pack
		t.Errorf("%d files: %v", got, listDir(t, dir, "20260304T05"))
	}
	s.Close()
	s = open(t, dir, Options{})
	checkTargets(t, s, t0, 3)
	if st := s.Stats(); st.Windows != 4 || st.Corrupt != 0 || st.Bytes != dirBytes(t, dir) {
		t.Errorf("after reopening: stats = %+v, disk holds %d bytes", st, dirBytes(t, dir))
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func TestPackRetention(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{MaxAge: time.Minute})
	now := t0
	s.now = func() time.Time { return now }
	for i := range 12 { // -60s .. 50s, crossing into hour 06
		start := t0.Add(time.Duration(i-6) * 10 * time.Second)
		putWindow(t, s, start, window(start, 5))
	}
	// A per-target window from before packs goes too.
	putLegacy(t, dir, t0.Add(-30*time.Second), map[string]string{"service_name": "legacy"}, cpuProfile("old", 1, t0))
	s.Close()
	s = open(t, dir, Options{})
	s.opts.MaxAge = time.Minute
	s.now = func() time.Time { return now }
	if n := s.Stats().Windows; n != 61 {
		t.Fatalf("%d windows before pruning", n)
	}
	now = t0.Add(2 * time.Minute) // windows ending before t0+60s go
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	checkTargets(t, s, t0.Add(50*time.Second), 5)
	if _, err := os.Stat(filepath.Join(dir, "20260304T05")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty hour directory kept: %v", err)
	}
	if got := len(listDir(t, dir, "20260304T06")); got != 2 {
		t.Errorf("files left: %v", listDir(t, dir, "20260304T06"))
	}
	if st := s.Stats(); st.Pruned != 56 || st.Windows != 5 || st.Bytes != dirBytes(t, dir) {
		t.Errorf("stats = %+v, disk %d bytes", st, dirBytes(t, dir))
	}

	// By size: whole windows go, oldest first.
	dir = t.TempDir()
	s = open(t, dir, Options{})
	putWindow(t, s, t0, window(t0, 20))
	one := s.Stats().Bytes
	s.Close()
	os.RemoveAll(dir)
	s = open(t, dir, Options{MaxBytes: 3*one + one/2})
	s.now = func() time.Time { return t0 }
	for i := range 6 {
		start := t0.Add(time.Duration(i) * 10 * time.Second)
		putWindow(t, s, start, window(start, 20))
		if b := s.Stats().Bytes; b > 3*one+one/2 || b != dirBytes(t, dir) {
			t.Fatalf("store holds %d bytes, disk %d, bound %d", b, dirBytes(t, dir), 3*one+one/2)
		}
	}
	for i := range 6 {
		start := t0.Add(time.Duration(i) * 10 * time.Second)
		ws, _ := s.Windows(context.Background(), start, start.Add(time.Nanosecond))
		if want := map[bool]int{true: 20, false: 0}[i >= 3]; len(ws) != want {
			t.Errorf("window %d: %d targets, want %d", i, len(ws), want)
		}
	}
	if st := s.Stats(); st.Pruned != 60 {
		t.Errorf("pruned %d, want 3 windows of 20", st.Pruned)
	}
}

func TestCorruptPacksSkipped(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	var starts []time.Time
	for i := range 8 {
		start := t0.Add(time.Duration(i) * time.Second)
		starts = append(starts, start)
		putWindow(t, s, start, window(start, 3))
	}
	s.Close()
	hdir := filepath.Join(dir, "20260304T05")
	path := func(i int, ext string) string { return filepath.Join(hdir, packName(starts[i], 0)+ext) }
	truncate := func(p string, by int64) {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, info.Size()-by); err != nil {
			t.Fatal(err)
		}
	}
	truncate(path(0, ".pack"), 1)                                           // pack shorter than its targets
	os.Remove(path(1, ".index"))                                            // pack without index
	os.WriteFile(path(2, ".index"), []byte("\x00garbage"), 0o600)           // index that does not parse
	os.Remove(path(3, ".pack"))                                             // index without pack
	truncate(path(4, ".index"), 10)                                         // truncated index
	os.WriteFile(path(5, ".index"), []byte(`{"version":4,"new":1}`), 0o600) // newer format: kept, with its pack
	f, _ := os.OpenFile(path(6, ".pack"), os.O_APPEND|os.O_WRONLY, 0)       // pack longer than its targets
	f.Write([]byte("x"))
	f.Close()
	os.WriteFile(filepath.Join(hdir, ".tmp-"+packName(starts[7], 1)+".pack-99"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(hdir, "20260304T055959.000000000Z-x.index"), []byte(`{"version":1}`), 0o600) // bad name

	s = open(t, dir, Options{})
	ws, _ := s.Windows(context.Background(), t0, t0.Add(time.Hour))
	if len(ws) != 3 {
		t.Errorf("%d targets after corruption, want the 3 of window 7", len(ws))
	}
	checkTargets(t, s, starts[7], 3)
	st := s.Stats()
	// 0: 2, 1: 1, 2: 2, 3: 1, 4: 2, 6: 2, tmp: 1, bad name: 1.
	if st.Corrupt != 12 || st.Skipped != 1 {
		t.Errorf("corrupt %d skipped %d, want 12 and 1", st.Corrupt, st.Skipped)
	}
	if got := fmt.Sprint(listDir(t, dir, "20260304T05")); got != fmt.Sprint([]string{
		packName(starts[5], 0) + ".index", packName(starts[5], 0) + ".pack",
		packName(starts[7], 0) + ".index", packName(starts[7], 0) + ".pack",
	}) {
		t.Errorf("files left: %s", got)
	}

	// A pack damaged after indexing, same size: the CRC catches it, for
	// the damaged target only.
	data, _ := os.ReadFile(path(7, ".pack"))
	s.mu.RLock()
	e := s.byID[ws[1].ID]
	s.mu.RUnlock()
	data[e.off+e.pbSize/2] ^= 0xff
	os.WriteFile(path(7, ".pack"), data, 0o600)
	for i, w := range ws {
		_, err := s.Open(context.Background(), w.ID)
		if damaged := i == 1; damaged != (err != nil) || damaged && !strings.Contains(err.Error(), "CRC") {
			t.Errorf("Open of target %d = %v", i, err)
		}
	}
	// Truncated after indexing: the last target reads short.
	truncate(path(7, ".pack"), 1)
	last := ws[0]
	for _, w := range ws {
		s.mu.RLock()
		if s.byID[w.ID].off > s.byID[last.ID].off {
			last = w
		}
		s.mu.RUnlock()
	}
	if _, err := s.Open(context.Background(), last.ID); err == nil {
		t.Error("Open of a truncated pack succeeded")
	}
	if s.Stats().ReadErrs != 2 {
		t.Errorf("read errors = %d", s.Stats().ReadErrs)
	}
	s.Close()

	// The new store's files are not the per-target layout's: a store of
	// that layout ignores them (an agent downgraded keeps its data).
	for _, name := range listDir(t, dir, "20260304T05") {
		if strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".pb.gz") {
			t.Errorf("file %s", name)
		}
	}
}
