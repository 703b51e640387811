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
	b.Add(sampler.Sample{Pid: 7, Tid: 8, Comm: "app", Kernel: []uint64{0xa0, 0xb0}, User: []uint64{0x2000, 0x3000}, Count: 3}) // same stack, other thread
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
	if len(p.Sample) != 5 {
		t.Fatalf("got %d samples, want 5 (threads of one process merge)", len(p.Sample))
	}
	if locs := p.Sample[4].Location; locs[len(locs)-1].Line[0].Function.Name != FrameTruncated {
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
	if s.Label["comm"][0] != "app" || s.NumLabel["pid"][0] != 7 {
		t.Errorf("labels %v %v", s.Label, s.NumLabel)
	}
	if inl := s.Location[3]; len(inl.Line) != 2 || inl.Line[0].Function.Name != "inlined" || !inl.Mapping.HasInlineFrames {
		t.Errorf("inline location %+v", inl)
	}
	if got := p.Sample[2].Location; got[0].Line[0].Function.Name != "ka0" || got[1].Line[0].Function.Name != FrameUserStackLost {
		t.Errorf("lost-stack sample %v", got)
	}
	if got := p.Sample[3].Location[0].Line[0].Function.Name; got != FrameNoStack {
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
	if all != 12 || top[0].Name != "ka0" || top[0].Self != 9 {
		t.Errorf("top %+v of %d", top, all)
	}
	var folded bytes.Buffer
	if err := WriteFolded(&folded, back); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(folded.String(), "app;u2fff;inlined;u2000;kaf;ka0 5\n") {
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
