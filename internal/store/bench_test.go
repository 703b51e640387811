package store

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// benchProfile is a busy window: 2000 distinct stacks of depth 20 over
// 1000 locations.
func benchProfile() *profile.Profile {
	p := cpuProfile("x", 1, t0)
	p.Sample, p.Location, p.Function = nil, nil, nil
	for i := range 1000 {
		id := uint64(i + 1)
		fn := &profile.Function{ID: id, Name: fmt.Sprintf("github.com/some/pkg.(*Type).method%d", i)}
		p.Function = append(p.Function, fn)
		p.Location = append(p.Location, &profile.Location{ID: id, Address: 0x400000 + id*16, Line: []profile.Line{{Function: fn, Line: int64(i)}}})
	}
	for i := range 2000 {
		var stack []*profile.Location
		for d := range 20 {
			stack = append(stack, p.Location[(i*7+d*131)%1000])
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: stack, Value: []int64{30_000_000, 3}})
	}
	return p
}

// BenchmarkPut measures writing one window of one target: serialization,
// a pack and its index.
func BenchmarkPut(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MaxAge: 100 * 365 * 24 * time.Hour, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	labels := map[string]string{"service_name": "svc", "pid": "1234"}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Put(t0.Add(time.Duration(i)*time.Second), time.Second, labels, p); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(s.Stats().Bytes)/float64(i), "disk-bytes/window")
}

// BenchmarkPutWindow measures writing a window of 200 targets into one
// pack and index.
func BenchmarkPutWindow(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MaxAge: 100 * 365 * 24 * time.Hour, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	p := benchProfile()
	items := make([]Item, 200)
	for i := range items {
		items[i] = Item{Labels: map[string]string{"service_name": "svc", "pid": strconv.Itoa(i)}, Profile: p}
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if err := s.PutWindow(t0.Add(time.Duration(i)*time.Second), time.Second, items); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(s.Stats().Bytes)/float64(i), "disk-bytes/window")
}

// BenchmarkWindows lists one minute out of a day of windows of 100 targets
// every 10s (864,000 windows in the index), and reports the index's memory.
func BenchmarkWindows(b *testing.B) {
	s := &Store{byID: make(map[string]*entry), labels: make(map[string]*labelSet)}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const targets, windows = 100, 8640
	for w := range windows {
		start := t0.Add(time.Duration(w) * 10 * time.Second)
		fl := &files{hour: start.Format(hourLayout), data: packName(start, 0) + packExt, index: packName(start, 0) + indexExt, size: 1}
		for tg := range targets {
			labels := map[string]string{"service_name": "svc" + strconv.Itoa(tg%10), "pid": strconv.Itoa(tg)}
			s.addLocked(&entry{id: windowID(start, labels), start: start.UnixNano(), dur: int64(10 * time.Second), files: fl}, labels, nil)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	from := t0.Add(12 * time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		ws, err := s.Windows(context.Background(), from, from.Add(time.Minute))
		if err != nil || len(ws) != 6*targets {
			b.Fatalf("%d windows, %v", len(ws), err)
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(targets*windows), "index-bytes/window")
}

// BenchmarkOpenIndex reopens a store of 200 windows of 50 services (and
// each window's merge of them), written as the agent writes them: each
// service's profile has two processes (pid and comm sample labels) that
// last 48 windows, so that consecutive windows list the same values, as
// long-lived processes do. It reports the heap the opened index takes per
// window (the viewer bench's day of windows is 288,000 of them).
func BenchmarkOpenIndex(b *testing.B) {
	dir := b.TempDir()
	opts := Options{MaxAge: 100 * 365 * 24 * time.Hour, MaxBytes: 1 << 40, NoRollups: true}
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	const services, windows, life = 50, 200, 48
	for w := range windows {
		start := t0.Add(time.Duration(w) * 15 * time.Second)
		items := make([]Item, services)
		merged := cpuProfile("f", 0, start)
		merged.Sample = nil
		for sv := range services {
			p := cpuProfile("f", 1, start)
			name := "svc" + strconv.Itoa(sv)
			for k := range 2 {
				pid := int64(1000 + sv*100 + (w/life)*2 + k)
				smp := &profile.Sample{Location: p.Sample[0].Location, Value: []int64{10_000_000, 1},
					Label: map[string][]string{"comm": {name + "-worker"}}, NumLabel: map[string][]int64{"pid": {pid}}}
				p.Sample = append(p.Sample, smp)
				merged.Sample = append(merged.Sample, &profile.Sample{Location: smp.Location, Value: smp.Value,
					Label: map[string][]string{"comm": {name + "-worker"}, "service_name": {name}}})
			}
			p.Sample = p.Sample[1:]
			items[sv] = Item{Labels: map[string]string{"service_name": name}, Profile: p}
		}
		if err := s.PutWindowMerged(start, 15*time.Second, items, merged); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	var before, after runtime.MemStats
	var n int
	b.ReportAllocs()
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n = len(s.windows)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "index-bytes/window")
		s.Close()
	}
	if n != windows*(services+1) {
		b.Fatalf("%d windows in the index, want %d", n, windows*(services+1))
	}
}
