package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

var t0 = time.Date(2026, 3, 4, 5, 59, 50, 0, time.UTC)

// cpuProfile builds a CPU profile whose single sample is n samples of fn.
func cpuProfile(fn string, n int64, start time.Time) *profile.Profile {
	f := &profile.Function{ID: 1, Name: fn, SystemName: fn}
	loc := &profile.Location{ID: 1, Address: 0x1000, Line: []profile.Line{{Function: f, Line: 3}}}
	return &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "cpu", Unit: "nanoseconds"}, {Type: "samples", Unit: "count"}},
		PeriodType:    &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:        10_000_000,
		TimeNanos:     start.UnixNano(),
		DurationNanos: int64(10 * time.Second),
		Sample:        []*profile.Sample{{Location: []*profile.Location{loc}, Value: []int64{n * 10_000_000, n}}},
		Location:      []*profile.Location{loc},
		Function:      []*profile.Function{f},
	}
}

// open opens a store; t0 is in the past, so unless the test sets MaxAge
// windows are kept for a century.
func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	if opts.MaxAge == 0 {
		opts.MaxAge = 100 * 365 * 24 * time.Hour
	}
	// The windows as written, without rollups built behind the test's
	// back; rollup_test.go builds them with Compact.
	opts.NoRollups = true
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *Store, start time.Time, labels map[string]string, fn string, n int64) {
	t.Helper()
	if err := s.Put(start, 10*time.Second, labels, cpuProfile(fn, n, start)); err != nil {
		t.Fatal(err)
	}
}

// storedBytes returns the stored gzipped profile of window id, and checks
// that it is in the directory of hour.
func storedBytes(t *testing.T, s *Store, id, hour string) []byte {
	t.Helper()
	s.mu.RLock()
	e := s.byID[id]
	s.mu.RUnlock()
	if e == nil {
		t.Fatalf("no window %s", id)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, hour, e.files.data))
	if err != nil {
		t.Fatal(err)
	}
	if e.off+e.pbSize > int64(len(data)) {
		t.Fatalf("window %s: %d bytes at %d, file of %d", id, e.pbSize, e.off, len(data))
	}
	return data[e.off : e.off+e.pbSize]
}

// putLegacy writes a window in the per-target layout of earlier versions:
// <start>-<hash>.pb.gz and a .json sidecar.
func putLegacy(t *testing.T, dir string, start time.Time, labels map[string]string, p *profile.Profile) {
	t.Helper()
	var pb bytes.Buffer
	if err := p.Write(&pb); err != nil {
		t.Fatal(err)
	}
	start = start.UTC()
	id := windowID(start, labels)
	m := meta{
		Version: metaVersion, ID: id, Start: start, DurationNS: int64(10 * time.Second),
		Labels: labels, Samples: p.Sample[0].Value[1], Size: int64(pb.Len()), CRC32: crc32.ChecksumIEEE(pb.Bytes()),
	}
	mj, err := json.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	hdir := filepath.Join(dir, start.Format(hourLayout))
	os.MkdirAll(hdir, 0o750)
	if err := os.WriteFile(filepath.Join(hdir, id+".pb.gz"), pb.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hdir, id+".json"), mj, 0o640); err != nil {
		t.Fatal(err)
	}
}

func ids(t *testing.T, s *Store, from, to time.Time) []string {
	t.Helper()
	ws, err := s.Windows(context.Background(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range ws {
		out = append(out, w.Labels["service_name"]+"@"+strconv.Itoa(int(w.Start.Sub(t0)/time.Second)))
	}
	return out
}

func TestPutWindowsOpen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	// The second and third windows cross an hour boundary.
	put(t, s, t0, map[string]string{"service_name": "a", "pid": "1"}, "fa", 5)
	put(t, s, t0.Add(10*time.Second), map[string]string{"service_name": "b", "pid": "2"}, "fb", 7)
	put(t, s, t0.Add(10*time.Second), map[string]string{"service_name": "a", "pid": "1"}, "fa2", 9)

	for _, c := range []struct {
		from, to time.Duration
		want     string
	}{
		{-time.Hour, time.Hour, "[a@0 a@10 b@10]"},
		{0, 10 * time.Second, "[a@0]"},
		{9 * time.Second, 11 * time.Second, "[a@0 a@10 b@10]"},
		{10 * time.Second, 20 * time.Second, "[a@10 b@10]"},
		{20 * time.Second, time.Hour, "[]"},
		{-time.Hour, 0, "[]"},
	} {
		if got := fmt.Sprint(ids(t, s, t0.Add(c.from), t0.Add(c.to))); got != c.want {
			t.Errorf("Windows(%v, %v) = %s, want %s", c.from, c.to, got, c.want)
		}
	}

	ws, _ := s.Windows(context.Background(), t0, t0.Add(time.Minute))
	w := ws[2] // b@10
	if w.Samples != 7 || w.Duration != 10*time.Second || !w.Start.Equal(t0.Add(10*time.Second)) || w.Labels["pid"] != "2" {
		t.Errorf("window = %+v", w)
	}
	// The labels are the index's shared, read-only map: a listing of a
	// day's windows makes no map per window.
	if ws2, _ := s.Windows(context.Background(), t0, t0.Add(time.Minute)); reflect.ValueOf(ws2[2].Labels).UnsafePointer() != reflect.ValueOf(w.Labels).UnsafePointer() {
		t.Error("each listing of a window copies its labels")
	}
	p, err := s.Open(context.Background(), w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Sample[0].Value[1] != 7 || p.Sample[0].Location[0].Line[0].Function.Name != "fb" || p.TimeNanos != t0.Add(10*time.Second).UnixNano() {
		t.Errorf("opened profile: %v", p)
	}

	// The stored bytes are a plain gzipped pprof, in a pack in the hour of
	// its start.
	if p, err := profile.Parse(bytes.NewReader(storedBytes(t, s, w.ID, "20260304T06"))); err != nil || p.Sample[0].Value[1] != 7 {
		t.Errorf("parsing the stored bytes: %v", err)
	}

	// Same start and labels: the window is replaced.
	put(t, s, t0, map[string]string{"service_name": "a", "pid": "1"}, "fa3", 11)
	ws, _ = s.Windows(context.Background(), t0, t0.Add(time.Second))
	if len(ws) != 1 || ws[0].Samples != 11 {
		t.Errorf("after replacing: %+v", ws)
	}

	for _, id := range []string{"", "nope", "../20260304T06/" + w.ID, strings.Repeat("x", 1000)} {
		if _, err := s.Open(context.Background(), id); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%.20q) = %v, want fs.ErrNotExist", id, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Windows(ctx, t0, t0.Add(time.Hour)); err == nil {
		t.Error("Windows with a cancelled context succeeded")
	}
	st := s.Stats()
	if st.Windows != 3 || st.Puts != 4 || st.Bytes <= 0 || len(st.PutErrors) != 0 {
		t.Errorf("stats = %+v", st)
	}

	for _, bad := range []*profile.Profile{nil, {SampleType: []*profile.ValueType{{Type: "a"}}, Sample: []*profile.Sample{{Value: []int64{1, 2}}}}} {
		if err := s.Put(t0, time.Second, nil, bad); err == nil {
			t.Errorf("Put accepted profile %v", bad)
		}
	}
	if err := s.Put(time.Time{}, time.Second, nil, cpuProfile("x", 1, t0)); err == nil {
		t.Error("Put accepted a zero start")
	}
	if got := s.Stats().PutErrors["invalid"]; got != 3 {
		t.Errorf("invalid Puts counted %d, want 3", got)
	}
	s.Close()
	if err := s.Put(t0, time.Second, nil, cpuProfile("x", 1, t0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
}

func TestRetentionByAge(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{MaxAge: time.Minute})
	now := t0
	s.now = func() time.Time { return now }
	for i := range 12 { // 0s .. 110s, crossing into hour 06
		put(t, s, t0.Add(time.Duration(i-6)*10*time.Second), map[string]string{"service_name": "a"}, "f", 1)
	}
	if n := s.Stats().Windows; n != 12 {
		t.Fatalf("%d windows before pruning", n)
	}
	now = t0.Add(2 * time.Minute) // windows ending before t0+60s go
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	got := ids(t, s, t0.Add(-time.Hour), t0.Add(time.Hour))
	if fmt.Sprint(got) != "[a@50]" {
		t.Errorf("after pruning: %v", got)
	}
	// The 05 hour is empty and its directory gone; files are gone too.
	if _, err := os.Stat(filepath.Join(dir, "20260304T05")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty hour directory kept: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	if len(files) != 2 {
		t.Errorf("files left: %v", files)
	}
	if st := s.Stats(); st.Pruned != 11 || st.Windows != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestRetentionBySize(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	put(t, s, t0, map[string]string{"service_name": "probe"}, "f", 1)
	one := s.Stats().Bytes
	s.Close()
	os.RemoveAll(dir)

	s = open(t, dir, Options{MaxBytes: 3*one + one/2})
	s.now = func() time.Time { return t0 }
	for i := range 6 {
		put(t, s, t0.Add(time.Duration(i)*10*time.Second), map[string]string{"service_name": "probe"}, "f", 1)
		if b := s.Stats().Bytes; b > 3*one+one/2 {
			t.Fatalf("store holds %d bytes, bound %d", b, 3*one+one/2)
		}
	}
	if got := fmt.Sprint(ids(t, s, t0, t0.Add(time.Hour))); got != "[probe@30 probe@40 probe@50]" {
		t.Errorf("kept %s, want the three newest", got)
	}
	var disk int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			disk += info.Size()
		}
		return nil
	})
	if st := s.Stats(); st.Pruned != 3 || disk != st.Bytes {
		t.Errorf("pruned %d, disk holds %d bytes, index says %d", st.Pruned, disk, st.Bytes)
	}
}

func TestReopenFindsWindows(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	s.now = func() time.Time { return t0 }
	for i := range 5 {
		put(t, s, t0.Add(time.Duration(i)*10*time.Second), map[string]string{"service_name": "svc", "i": strconv.Itoa(i)}, "f"+strconv.Itoa(i), int64(i+1))
	}
	before, _ := s.Windows(context.Background(), t0.Add(-time.Hour), t0.Add(time.Hour))
	s.Close()

	s = open(t, dir, Options{})
	after, _ := s.Windows(context.Background(), t0.Add(-time.Hour), t0.Add(time.Hour))
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("after reopening:\n%v\nwant\n%v", after, before)
	}
	for i, w := range after {
		p, err := s.Open(context.Background(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fn := p.Function[0].Name; fn != "f"+strconv.Itoa(i) {
			t.Errorf("window %d holds %s", i, fn)
		}
	}
	if st := s.Stats(); st.Corrupt != 0 || st.Windows != 5 {
		t.Errorf("stats = %+v", st)
	}
}

// logRecorder is a slog.Handler that counts records by "cause".
type logRecorder struct {
	mu     sync.Mutex
	causes []string
	msgs   []string
}

func (l *logRecorder) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelInfo }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "cause" {
			l.causes = append(l.causes, a.Value.String())
		}
		return true
	})
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// TestCorruptFilesSkipped checks the per-target layout written before packs.
func TestCorruptFilesSkipped(t *testing.T) {
	dir := t.TempDir()
	for i := range 6 {
		start := t0.Add(time.Duration(i) * time.Second)
		putLegacy(t, dir, start, map[string]string{"service_name": "svc", "i": strconv.Itoa(i)}, cpuProfile("f", 1, start))
	}
	s := open(t, dir, Options{})
	ws, _ := s.Windows(context.Background(), t0, t0.Add(time.Hour))
	if len(ws) != 6 || s.Stats().Corrupt != 0 {
		t.Fatalf("per-target layout: %d windows, stats %+v", len(ws), s.Stats())
	}
	s.Close()
	path := func(i int, ext string) string {
		return filepath.Join(dir, "20260304T05", ws[i].ID+ext)
	}
	os.WriteFile(path(0, ".json"), []byte(`{"version":1,"id":`), 0o600)          // truncated sidecar
	os.WriteFile(path(1, ".pb.gz"), []byte("short"), 0o600)                      // wrong size
	os.Remove(path(2, ".json"))                                                  // orphan profile
	os.Remove(path(3, ".pb.gz"))                                                 // sidecar without profile
	os.WriteFile(path(4, ".json"), []byte(`{"version":2,"future":true}`), 0o600) // newer format: kept
	os.WriteFile(filepath.Join(dir, "20260304T05", ".tmp-x.pb.gz-123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not ours"), 0o600)

	logs := &logRecorder{}
	s = open(t, dir, Options{Logger: slog.New(logs)})
	got, _ := s.Windows(context.Background(), t0, t0.Add(time.Hour))
	if len(got) != 1 || got[0].ID != ws[5].ID {
		t.Errorf("windows after corruption: %v, want only %s", got, ws[5].ID)
	}
	st := s.Stats()
	// 0: json+pb, 1: json+pb, 2: pb, 3: json, tmp: 1.
	if st.Corrupt != 7 || st.Skipped != 1 {
		t.Errorf("corrupt %d skipped %d, want 7 and 1", st.Corrupt, st.Skipped)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "20260304T05", "*"))
	tmps, _ := filepath.Glob(filepath.Join(dir, "20260304T05", ".tmp-*"))
	if len(left) != 4 || len(tmps) != 0 { // windows 5 and 4 (future format)
		t.Errorf("files left: %v %v", left, tmps)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Error("removed a file the store does not own")
	}
	logs.mu.Lock()
	if len(logs.msgs) != 1 {
		t.Errorf("logged %q, want one summary", logs.msgs)
	}
	logs.mu.Unlock()

	// A profile damaged after indexing, same size: the CRC catches it.
	pb := path(5, ".pb.gz")
	data, _ := os.ReadFile(pb)
	data[len(data)/2] ^= 0xff
	os.WriteFile(pb, data, 0o600)
	if _, err := s.Open(context.Background(), ws[5].ID); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("Open of a damaged profile = %v", err)
	}
	if s.Stats().ReadErrs != 1 {
		t.Errorf("read errors = %d", s.Stats().ReadErrs)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory (root only).
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return ""
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Fatalf("mounting tmpfs as root: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func TestReadOnlyDir(t *testing.T) {
	dir := mountTmpfs(t, 1<<20)
	remount := func() {
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
	}
	if dir == "" {
		// Not root: a directory without write permission stands in for a
		// read-only file system (root would ignore the permission bits).
		dir = t.TempDir()
		remount = func() { os.Chmod(dir, 0o555) }
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	s := open(t, dir, Options{})
	s.now = func() time.Time { return t0 }
	put(t, s, t0, map[string]string{"service_name": "a"}, "f", 1)
	s.Close()
	remount()

	logs := &logRecorder{}
	s = open(t, dir, Options{Logger: slog.New(logs)})
	for i := range 3 {
		err := s.Put(t0.Add(time.Duration(i+1)*time.Hour), time.Second, map[string]string{"service_name": "a"}, cpuProfile("f", 1, t0))
		if err == nil {
			t.Fatal("Put into a read-only directory succeeded")
		}
	}
	want := "read_only"
	if os.Geteuid() != 0 {
		want = "permission"
	}
	st := s.Stats()
	if st.PutErrors[want] != 3 || st.Windows != 1 {
		t.Errorf("stats = %+v, want 3 %s errors and the old window", st, want)
	}
	logs.mu.Lock()
	if fmt.Sprint(logs.causes) != "["+want+"]" {
		t.Errorf("logged causes %v, want one %s", logs.causes, want)
	}
	logs.mu.Unlock()
	// Old windows are still served.
	ws, _ := s.Windows(context.Background(), t0, t0.Add(time.Second))
	if len(ws) != 1 {
		t.Fatalf("windows = %v", ws)
	}
	if _, err := s.Open(context.Background(), ws[0].ID); err != nil {
		t.Error(err)
	}
}

func TestDiskFull(t *testing.T) {
	testenv.RequireRoot(t) // mounts a small tmpfs to fill
	dir := mountTmpfs(t, 64<<10)
	logs := &logRecorder{}
	s := open(t, dir, Options{Logger: slog.New(logs)})
	s.now = func() time.Time { return t0 }
	// Incompressible function names make each profile a few KiB.
	big := func(i int) *profile.Profile {
		p := cpuProfile("f", 1, t0)
		var b strings.Builder
		for j := range 600 {
			fmt.Fprintf(&b, "%08x", uint32(i*7919+j)*2654435761)
		}
		p.Function[0].Name = b.String()
		return p
	}
	var full int
	for i := range 100 {
		if err := s.Put(t0.Add(time.Duration(i)*time.Second), time.Second, map[string]string{"service_name": "a"}, big(i)); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("Put %d: %v, want ENOSPC", i, err)
			}
			full++
		}
	}
	st := s.Stats()
	if full == 0 || st.PutErrors["disk_full"] != uint64(full) || st.Windows+full != 100 {
		t.Fatalf("%d Puts failed; stats = %+v", full, st)
	}
	logs.mu.Lock()
	if fmt.Sprint(logs.causes) != "[disk_full]" {
		t.Errorf("logged causes %v, want one disk_full", logs.causes)
	}
	logs.mu.Unlock()
	// No temporary file is left behind, and the index matches the disk.
	tmps, _ := filepath.Glob(filepath.Join(dir, "*", ".tmp-*"))
	indexes, _ := filepath.Glob(filepath.Join(dir, "*", "*.index"))
	packs, _ := filepath.Glob(filepath.Join(dir, "*", "*.pack"))
	if len(tmps) != 0 || len(indexes) != st.Windows || len(packs) != st.Windows {
		t.Errorf("%d temporary files, %d indexes and %d packs for %d windows", len(tmps), len(indexes), len(packs), st.Windows)
	}
	// Freeing space lets Put work again.
	s.opts.MaxBytes = st.Bytes / 2
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t0.Add(time.Hour), time.Second, map[string]string{"service_name": "a"}, big(1000)); err != nil {
		t.Errorf("Put after pruning: %v", err)
	}
}

// TestWindowValues: a window lists the distinct values of its samples' pid
// and comm labels (for the viewer's lists and filters), also after the
// store is opened again; a label with more than maxValues values is listed
// with none (unknown), not cut short, and one left out has no values
// (ValuesComplete).
func TestWindowValues(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	p := cpuProfile("f", 1, t0)
	for i := range maxValues + 1 {
		smp := *p.Sample[0]
		smp.Label = map[string][]string{"comm": {"c" + strconv.Itoa(i%3)}}
		smp.NumLabel = map[string][]int64{"pid": {int64(100 + i)}}
		p.Sample = append(p.Sample, &smp)
	}
	q := cpuProfile("g", 1, t0)
	q.Sample[0].NumLabel = map[string][]int64{"pid": {7, 7}}
	if err := s.PutWindow(t0, 10*time.Second, []Item{{Labels: map[string]string{"service_name": "a"}, Profile: p},
		{Labels: map[string]string{"service_name": "b"}, Profile: q}}); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		ws, err := s.Windows(context.Background(), t0, t0.Add(time.Minute))
		if err != nil || len(ws) != 2 {
			t.Fatalf("%s: %d windows, %v", when, len(ws), err)
		}
		for _, w := range ws {
			var want map[string][]string
			switch w.Labels["service_name"] {
			case "a": // too many pids to list
				want = map[string][]string{"comm": {"c0", "c1", "c2"}, "pid": {}}
				if v, listed := w.Values["pid"]; !listed || len(v) != 0 {
					t.Errorf("%s: too many pids listed as %v (listed: %v)", when, v, listed)
				}
			case "b":
				want = map[string][]string{"pid": {"7"}}
			}
			if fmt.Sprint(w.Values) != fmt.Sprint(want) || !w.ValuesComplete {
				t.Errorf("%s: window %v values %v (complete: %v), want %v, complete", when, w.Labels, w.Values, w.ValuesComplete, want)
			}
		}
	}
	check("written")
	s.Close()
	s = open(t, dir, Options{})
	defer s.Close()
	check("reopened")
}

// TestWindowValuesShared checks that windows listing the same values share
// one set (a day of a service's windows would otherwise hold a map each),
// that the sets go with the last window listing them, and that sets whose
// hashes collide are told apart and unchained correctly.
func TestWindowValuesShared(t *testing.T) {
	s := open(t, t.TempDir(), Options{MaxAge: time.Minute})
	defer s.Close()
	now := t0
	s.now = func() time.Time { return now }
	withPids := func(start time.Time, pids ...int64) *profile.Profile {
		p := cpuProfile("f", 1, start)
		p.Sample[0].NumLabel = map[string][]int64{"pid": pids}
		return p
	}
	for i := range 6 {
		start := t0.Add(time.Duration(i) * 10 * time.Second)
		if err := s.PutWindow(start, 10*time.Second, []Item{
			{Labels: map[string]string{"service_name": "a"}, Profile: withPids(start, 7, 8)},
			{Labels: map[string]string{"service_name": "b"}, Profile: withPids(start, int64(100+i/3))},
		}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := s.Windows(context.Background(), t0, t0.Add(time.Minute))
	if err != nil || len(ws) != 12 {
		t.Fatalf("%d windows, %v", len(ws), err)
	}
	for _, w := range ws {
		want := "[7 8]"
		if w.Labels["service_name"] == "b" {
			want = fmt.Sprintf("[%d]", 100+(w.Start.Sub(t0)/(30*time.Second)))
		}
		if got := fmt.Sprint(w.Values["pid"]); got != want {
			t.Errorf("window %v at %v: pids %s, want %s", w.Labels, w.Start.Sub(t0), got, want)
		}
	}
	s.mu.Lock()
	var refs []int
	for _, vs := range s.values {
		refs = append(refs, vs.refs)
	}
	s.mu.Unlock()
	slices.Sort(refs)
	if fmt.Sprint(refs) != "[3 3 6]" {
		t.Errorf("references of the value sets: %v, want [3 3 6] (a's six windows share one)", refs)
	}
	now = t0.Add(10 * time.Minute) // every window goes
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	if len(s.values) != 0 {
		t.Errorf("%d value sets left with no window", len(s.values))
	}

	// Three sets with the same hash, released in the middle, first, last.
	x, y, z := map[string][]string{"pid": {"1"}}, map[string][]string{"pid": {"2"}}, map[string][]string{"pid": {"3"}}
	vx, vy, vz := &valueSet{m: x, hash: 9, refs: 1}, &valueSet{m: y, hash: 9, refs: 1}, &valueSet{m: z, hash: 9, refs: 1}
	vz.next, vy.next = vy, vx
	s.values = map[uint64]*valueSet{9: vz}
	s.releaseValuesLocked(vy)
	if s.values[9] != vz || vz.next != vx || vx.next != nil {
		t.Fatal("releasing the middle of a chain")
	}
	s.releaseValuesLocked(vz)
	if s.values[9] != vx {
		t.Fatal("releasing the head of a chain")
	}
	s.releaseValuesLocked(vx)
	if len(s.values) != 0 {
		t.Fatal("releasing the last of a chain")
	}
}
