package exporter

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// fakeResolver names user address a as "u<a>" in a mapping per pid and
// kernel address a as "k<a>"; it records what it was asked.
type fakeResolver struct {
	maps  map[uint32]*symbolizer.Mapping
	asked []string
}

func (f *fakeResolver) ResolveUser(pid uint32, addr uint64) symbolizer.Frame {
	f.asked = append(f.asked, fmt.Sprintf("u%d:%x", pid, addr))
	m := f.maps[pid]
	if m == nil {
		m = &symbolizer.Mapping{Start: 0x1000, Limit: 0x9000, File: fmt.Sprintf("/bin/p%d", pid), BuildID: "abcd"}
		f.maps[pid] = m
	}
	lines := []symbolizer.Line{{Function: fmt.Sprintf("u%x", addr), File: "a.c", Line: 7}}
	if addr == 0x2fff { // an inlined call
		lines = append([]symbolizer.Line{{Function: "inlined", File: "a.h", Line: 3}}, lines...)
	}
	return symbolizer.Frame{Kind: symbolizer.KindUser, Mapping: m, Lines: lines}
}

func (f *fakeResolver) ResolveKernel(addr uint64) symbolizer.Frame {
	f.asked = append(f.asked, fmt.Sprintf("k:%x", addr))
	return symbolizer.Frame{Kind: symbolizer.KindKernel, Lines: []symbolizer.Line{{Function: fmt.Sprintf("k%x", addr)}}}
}

func TestBuilder(t *testing.T) {
	res := &fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}
	start := time.Unix(1700000000, 0)
	b := NewBuilder(res, 100, start)
	b.Add(sampler.Sample{Pid: 7, Tid: 7, Comm: "app", Kernel: []uint64{0xa0, 0xb0}, User: []uint64{0x2000, 0x3000}, Count: 2})
	b.Add(sampler.Sample{Pid: 7, Tid: 7, Comm: "app", Kernel: []uint64{0xa0, 0xb0}, User: []uint64{0x2000, 0x3000}, Count: 3}) // same stack and thread: merged
	b.Add(sampler.Sample{Pid: 7, Tid: 8, Comm: "app", Kernel: []uint64{0xa0, 0xb0}, User: []uint64{0x2000, 0x3000}, Count: 4}) // same stack, other thread
	b.Add(sampler.Sample{Pid: 9, Comm: "other", User: []uint64{0x2000}, UserLost: false, Count: 1})
	b.Add(sampler.Sample{Pid: 9, Comm: "other", UserLost: true, Kernel: []uint64{0xa0}, Count: 4})
	b.Add(sampler.Sample{Pid: 0, Comm: "swapper/0", Count: 1})
	b.Add(sampler.Sample{Pid: 9, Comm: "other", User: []uint64{0x2000, 0x3000}, UserTruncated: true, Count: 1})
	p, err := b.Build(start.Add(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if p.Period != 10_000_000 || p.DurationNanos != 2e9 || p.TimeNanos != start.UnixNano() {
		t.Errorf("period %d duration %d time %d", p.Period, p.DurationNanos, p.TimeNanos)
	}
	if len(p.Sample) != 6 {
		t.Fatalf("got %d samples, want 6 (one per thread and stack)", len(p.Sample))
	}
	if s := p.Sample[1]; s.Value[0] != 4 || s.NumLabel["tid"][0] != 8 || s.NumLabel["pid"][0] != 7 {
		t.Errorf("the other thread's sample: values %v, labels %v", s.Value, s.NumLabel)
	}
	if locs := p.Sample[5].Location; locs[len(locs)-1].Line[0].Function.Name != FrameTruncated {
		t.Errorf("truncated stack does not end in %s", FrameTruncated)
	}
	s := p.Sample[0]
	if s.Value[0] != 5 || s.Value[1] != 5*10_000_000 {
		t.Errorf("merged sample values %v", s.Value)
	}
	var names []string
	for _, l := range s.Location {
		names = append(names, l.Line[0].Function.Name)
	}
	// Kernel frames first (leaf side), then user; the first address of
	// each stack is looked up as is, return addresses minus one.
	if got := strings.Join(names, ","); got != "ka0,kaf,u2000,inlined" {
		t.Errorf("stack %s", got)
	}
	if s.Label["comm"][0] != "app" || s.NumLabel["pid"][0] != 7 || s.NumLabel["tid"][0] != 7 {
		t.Errorf("labels %v %v", s.Label, s.NumLabel)
	}
	if inl := s.Location[3]; len(inl.Line) != 2 || inl.Line[0].Function.Name != "inlined" || !inl.Mapping.HasInlineFrames {
		t.Errorf("inline location %+v", inl)
	}
	if got := p.Sample[3].Location; got[0].Line[0].Function.Name != "ka0" || got[1].Line[0].Function.Name != FrameUserStackLost {
		t.Errorf("lost-stack sample %v", got)
	}
	if got := p.Sample[4].Location[0].Line[0].Function.Name; got != FrameNoStack {
		t.Errorf("empty sample named %q", got)
	}
	// One per process file, and the kernel's for kernel frames the
	// resolver gave no mapping.
	if len(p.Mapping) != 3 {
		t.Errorf("%d mappings, want one per process file and the kernel's", len(p.Mapping))
	}
	// Each distinct (pid, address) is resolved once.
	if len(res.asked) != 6 {
		t.Errorf("resolver asked %v", res.asked)
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.CheckValid(); err != nil {
		t.Fatal(err)
	}
	top, all := Top(back, 2)
	if all != 16 || top[0].Name != "ka0" || top[0].Self != 13 {
		t.Errorf("top %+v of %d", top, all)
	}
	var folded bytes.Buffer
	if err := WriteFolded(&folded, back); err != nil {
		t.Fatal(err)
	}
	// Folded stacks merge the threads of a process.
	if !strings.Contains(folded.String(), "app;u2fff;inlined;u2000;kaf;ka0 9\n") {
		t.Errorf("folded:\n%s", folded.String())
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for i := range 3 { // reused compressors must start clean
		p := &profile.Profile{
			SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}},
			Sample:     []*profile.Sample{{Value: []int64{int64(i + 1)}}},
		}
		b, err := Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := profile.ParseData(b)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if len(q.Sample) != 1 || q.Sample[0].Value[0] != int64(i+1) {
			t.Errorf("round %d: got %v", i, q.Sample)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}}}
	for i := range 200 {
		p.Sample = append(p.Sample, &profile.Sample{Value: []int64{int64(i)}})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(p); err != nil {
			b.Fatal(err)
		}
	}
}

// execResolver is a fakeResolver that also knows each process's
// executable mapping (pid 0 and kernel threads have none).
type execResolver struct {
	fakeResolver
	kernel *symbolizer.Mapping
	exes   map[uint32]*symbolizer.Mapping
}

func (r *execResolver) ResolveKernel(addr uint64) symbolizer.Frame {
	fr := r.fakeResolver.ResolveKernel(addr)
	fr.Mapping = r.kernel
	return fr
}

func (r *execResolver) Executable(pid uint32) *symbolizer.Mapping { return r.exes[pid] }

// TestMainMapping: the first mapping (pprof's main binary, its "File:") is
// the executable of the process SetMainProcess names, else of the busiest
// process that has one, even when kernel or library frames came first.
func TestMainMapping(t *testing.T) {
	start := time.Unix(1700000000, 0)
	newRes := func() *execResolver {
		r := &execResolver{fakeResolver: fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}, kernel: &symbolizer.Mapping{File: "[kernel.kallsyms]"}}
		r.maps[9] = &symbolizer.Mapping{Start: 0x1000, Limit: 0x9000, File: "/lib/libc.so.6"} // pid 9's samples fall in libc
		r.exes = map[uint32]*symbolizer.Mapping{
			7:  {Start: 0x1000, Limit: 0x9000, File: "/bin/p7"},
			9:  {Start: 0x10000, Limit: 0x19000, File: "/usr/bin/busy"},
			11: {Start: 0x1000, Limit: 0x2000, File: "/bin/idle"}, // never sampled
		}
		r.maps[7] = r.exes[7]
		return r
	}
	add := func(b *Builder) {
		b.Add(sampler.Sample{Pid: 7, Comm: "app", Kernel: []uint64{0xa0}, User: []uint64{0x2000}, Count: 2})
		b.Add(sampler.Sample{Pid: 9, Comm: "busy", User: []uint64{0x2000}, Count: 5})
		b.Add(sampler.Sample{Pid: 3, Comm: "kworker/0:1", Kernel: []uint64{0xb0}, Count: 9}) // busiest, no executable
		b.Add(sampler.Sample{Pid: 0, Comm: "swapper/0", Kernel: []uint64{0xc0}, Count: 50})
	}
	for _, tc := range []struct {
		main uint32
		want string
	}{
		{0, "/usr/bin/busy"}, // busiest with an executable, not yet a mapping
		{7, "/bin/p7"},
		{11, "/bin/idle"},
	} {
		b := NewBuilder(newRes(), 100, start)
		add(b)
		b.SetMainProcess(tc.main)
		p, err := b.Build(start.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if p.Mapping[0].File != tc.want {
			t.Errorf("main %d: first mapping %s, want %s", tc.main, p.Mapping[0].File, tc.want)
		}
		for i, m := range p.Mapping {
			if m.ID != uint64(i+1) {
				t.Errorf("main %d: mapping %d has id %d", tc.main, i, m.ID)
			}
		}
		// Written and read back, pprof sees the same main binary and
		// the locations keep their mappings.
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		q, err := profile.Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if q.Mapping[0].File != tc.want {
			t.Errorf("main %d: read back, first mapping %s", tc.main, q.Mapping[0].File)
		}
		for _, l := range q.Location {
			if l.Line[0].Function.Name == "ka0" && l.Mapping.File != "[kernel.kallsyms]" {
				t.Errorf("main %d: kernel location in %s after reordering", tc.main, l.Mapping.File)
			}
		}
	}
	// A resolver that knows no executables leaves the order alone.
	b := NewBuilder(&fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}, 100, start)
	b.Add(sampler.Sample{Pid: 7, Comm: "app", User: []uint64{0x2000}, Count: 1})
	b.Add(sampler.Sample{Pid: 9, Comm: "busy", User: []uint64{0x2000}, Count: 5})
	if p, err := b.Build(start); err != nil || p.Mapping[0].File != "/bin/p7" {
		t.Errorf("without executables: %v, first %s", err, p.Mapping[0].File)
	}
}

// TestBuilderUnknownCaller: a leaf walked without a table is followed by
// the unknown-caller frame, never directly by the next address.
func TestBuilderUnknownCaller(t *testing.T) {
	res := &fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}
	start := time.Unix(1700000000, 0)
	b := NewBuilder(res, 100, start)
	b.Add(sampler.Sample{Pid: 7, Comm: "app", User: []uint64{0x2000, 0x3000, 0x4000}, UserCallerUnknown: true, Count: 2})
	b.Add(sampler.Sample{Pid: 7, Comm: "app", User: []uint64{0x2000, 0x3000, 0x4000}, Count: 1})
	b.Add(sampler.Sample{Pid: 7, Comm: "app", User: []uint64{0x2000}, UserCallerUnknown: true, Count: 1}) // nothing above the leaf: no marker
	p, err := b.Build(start.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"u2000,[unknown caller],inlined,u3fff": 2, "u2000,inlined,u3fff": 1, "u2000": 1}
	for _, s := range p.Sample {
		var names []string
		for _, l := range s.Location {
			names = append(names, l.Line[0].Function.Name)
		}
		got := strings.Join(names, ",")
		if want[got] != s.Value[0] {
			t.Errorf("sample %s: %d, want %d", got, s.Value[0], want[got])
		}
		delete(want, got)
	}
	if len(want) > 0 {
		t.Errorf("missing samples %v", want)
	}
}

// TestBuilderAcrossTargets: AddLabeled keeps each target's labels on its
// samples, and WithoutProcesses merges the same stack of every process
// and thread of one target into one sample, without pid or tid.
func TestBuilderAcrossTargets(t *testing.T) {
	res := &fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}
	start := time.Unix(1700000000, 0)
	b := NewBuilder(res, 100, start).WithoutProcesses()
	a := map[string]string{"service_name": "a", "pid": "7"} // a pid series label: numeric in every sample, or none
	c := map[string]string{"service_name": "c"}
	// One program, mapped at another address in each process (ASLR).
	stack := func(pid uint32) []uint64 {
		base := uint64(pid) << 20
		res.maps[pid] = &symbolizer.Mapping{Start: base, Limit: base + 0x9000, Offset: 0x1000, File: "/bin/app", BuildID: "abcd"}
		return []uint64{base + 0x2000, base + 0x3000}
	}
	for pid := uint32(1); pid <= 50; pid++ {
		b.AddLabeled(sampler.Sample{Pid: pid, Tid: pid + 1000, Comm: "app", User: stack(pid), Count: 2}, "a", a)
	}
	b.AddLabeled(sampler.Sample{Pid: 77, Tid: 77, Comm: "app", User: stack(77), Count: 3}, "c", c)
	p, err := b.Build(start.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) != 2 {
		t.Fatalf("%d samples, want one per target", len(p.Sample))
	}
	for i, want := range []struct {
		service string
		n       int64
	}{{"a", 100}, {"c", 3}} {
		s := p.Sample[i]
		if s.Value[0] != want.n || s.Label["service_name"][0] != want.service || s.Label["comm"][0] != "app" || s.Label["pid"] != nil || s.NumLabel != nil {
			t.Errorf("sample %d: %v %v %v, want %d samples of service %s, comm app and no process", i, s.Value, s.Label, s.NumLabel, want.n, want.service)
		}
	}
	if len(p.Location) != 2 || len(p.Mapping) != 1 {
		t.Errorf("%d locations in %d mappings, want the program's 2 in 1", len(p.Location), len(p.Mapping))
	}
}

// TestFramesShared: two builders of the same samples (a target's and the
// merge of all targets) through one Frames, reset after each sample, name
// each address once, and build what each builds alone.
func TestFramesShared(t *testing.T) {
	start := time.Unix(1700000000, 0)
	samples := []sampler.Sample{
		{Pid: 7, Tid: 7, Comm: "app", Kernel: []uint64{0xa0, 0xb0}, User: []uint64{0x2000, 0x3000}, Count: 2},
		{Pid: 8, Tid: 8, Comm: "app", Kernel: []uint64{0xa0}, User: []uint64{0x2000, 0x2fff}, Count: 1},
	}
	alone := &fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}
	shared := &fakeResolver{maps: map[uint32]*symbolizer.Mapping{}}
	fr := NewFrames(shared)
	var want, got []*profile.Profile
	for _, res := range []Resolver{alone, fr} {
		target, merged := NewBuilder(res, 100, start), NewBuilder(res, 100, start).WithoutProcesses()
		for _, s := range samples {
			target.Add(s)
			merged.AddLabeled(s, "svc", map[string]string{"service_name": "svc"})
			fr.Reset()
		}
		for _, b := range []*Builder{target, merged} {
			p, err := b.Build(start.Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if res == Resolver(alone) {
				want = append(want, p)
			} else {
				got = append(got, p)
			}
		}
	}
	if len(shared.asked) != 6 || len(alone.asked) != 12 {
		t.Errorf("asked %d times through Frames (%v), %d without; want 6 and 12", len(shared.asked), shared.asked, len(alone.asked))
	}
	for i := range want {
		if w, g := want[i].String(), got[i].String(); w != g {
			t.Errorf("builder %d: through Frames\n%s\nwant\n%s", i, g, w)
		}
	}
}
