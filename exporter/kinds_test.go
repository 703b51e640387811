package exporter

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/symbolizer"
)

func TestFrameKind(t *testing.T) {
	const (
		user   = symbolizer.KindUser
		kernel = symbolizer.KindKernel
		jit    = symbolizer.KindJIT
	)
	tests := []struct {
		file string // "" for no mapping
		addr uint64
		want symbolizer.Kind
	}{
		{"[kernel.kallsyms]", 0xffffffff81000000, kernel},
		{"[nf_tables]", 0xffffffffc0000000, kernel},
		{"[vdso]", 0x7fff0000, user},
		{"[vsyscall]", 0xffffffffff600000, user},
		{"[anon:libc_malloc]", 0x1000, user},
		{"[jit]", 0x1000, jit},
		{"[JIT] tid 1234", 0x1000, jit},
		{"/tmp/perf-1234.map", 0x1000, jit},
		{"perf-1234.map", 0x1000, jit},
		{"//anon", 0x1000, jit},
		{"/tmp/perf-.map", 0x1000, user},
		{"/tmp/perf-12x.map", 0x1000, user},
		{"/usr/lib/libc.so.6", 0x1000, user},
		{"", 0xffffffff81000000, kernel},
		{"", 0x401000, user},
	}
	for _, tt := range tests {
		loc := &profile.Location{Address: tt.addr}
		if tt.file != "" {
			loc.Mapping = &profile.Mapping{File: tt.file}
		}
		if got := FrameKind(loc); got != tt.want {
			t.Errorf("FrameKind(%q, %#x) = %v, want %v", tt.file, tt.addr, got, tt.want)
		}
	}
	pseudo := func(name string) *profile.Location {
		return &profile.Location{Line: []profile.Line{{Function: &profile.Function{Name: name}}}}
	}
	if got := FrameKind(pseudo(FrameKernelStackLost)); got != kernel {
		t.Errorf("%s: %v, want kernel", FrameKernelStackLost, got)
	}
	if got := FrameKind(pseudo(FrameUserStackLost)); got != user {
		t.Errorf("%s: %v, want user", FrameUserStackLost, got)
	}
	if got := FrameKind(nil); got != user {
		t.Errorf("nil location: %v, want user", got)
	}
}

// kindResolver gives, per address, a frame as the symbolizer makes them
// for each kind of code.
type kindResolver struct{ frames map[uint64]symbolizer.Frame }

func (r kindResolver) ResolveUser(_ uint32, addr uint64) symbolizer.Frame {
	return r.frames[addr+1] // return addresses come minus one
}
func (r kindResolver) ResolveKernel(addr uint64) symbolizer.Frame { return r.frames[addr+1] }

// TestBuilderKinds checks the mapping names the Builder writes for every
// kind of frame, and that FrameKind reads the symbolizer's kind back from
// the written file, also after pprof merges profiles (as the viewer's
// download does).
func TestBuilderKinds(t *testing.T) {
	line := func(fn string) []symbolizer.Line { return []symbolizer.Line{{Function: fn}} }
	kernelImg := &symbolizer.Mapping{Start: 0xffffffff81000000, Limit: 0xffffffff83000000, File: "[kernel.kallsyms]"}
	module := &symbolizer.Mapping{Start: 0xffffffffc0000000, Limit: 0xffffffffc0100000, File: "[ext4]"}
	vdso := &symbolizer.Mapping{Start: 0x7fff1000, Limit: 0x7fff3000, File: "[vdso]"}
	anon := &symbolizer.Mapping{Start: 0x7f0000000000, Limit: 0x7f0000040000} // as /proc/PID/maps gives it: no path
	exe := &symbolizer.Mapping{Start: 0x400000, Limit: 0x500000, File: "/usr/bin/node", BuildID: "beef"}
	tests := []struct {
		name string
		addr uint64
		fr   symbolizer.Frame
		file string // mapping file written, "" for none
	}{
		{"schedule", 0xffffffff81000100, symbolizer.Frame{Kind: symbolizer.KindKernel, Mapping: kernelImg, Lines: line("schedule")}, "[kernel.kallsyms]"},
		{"ext4_read", 0xffffffffc0000100, symbolizer.Frame{Kind: symbolizer.KindKernel, Mapping: module, Lines: line("ext4_read")}, "[ext4]"},
		{"bpf_prog_1", 0xffffffffa0000100, symbolizer.Frame{Kind: symbolizer.KindKernel, Lines: line("bpf_prog_1")}, MappingKernel},
		{"JS:*hot", 0x7f0000000100, symbolizer.Frame{Kind: symbolizer.KindJIT, Mapping: anon, Lines: line("JS:*hot")}, MappingJIT},
		{"[anon]+0x200", 0x7f0000000200, symbolizer.Frame{Kind: symbolizer.KindJIT, Mapping: anon, Lines: line("[anon]+0x200")}, MappingJIT},
		{"JS:*new", 0x7f1000000100, symbolizer.Frame{Kind: symbolizer.KindJIT, Lines: line("JS:*new")}, MappingJIT},
		{"__vdso_clock_gettime", 0x7fff1100, symbolizer.Frame{Kind: symbolizer.KindUser, Mapping: vdso, Lines: line("__vdso_clock_gettime")}, "[vdso]"},
		{"main", 0x400100, symbolizer.Frame{Kind: symbolizer.KindUser, Mapping: exe, Lines: line("main")}, "/usr/bin/node"},
		{"[unknown]", 0x100, symbolizer.Frame{Kind: symbolizer.KindUser, Lines: line("[unknown]")}, ""},
	}
	res := kindResolver{frames: map[uint64]symbolizer.Frame{}}
	var kstack, ustack []uint64
	for _, tt := range tests {
		res.frames[tt.addr] = tt.fr
		// Every address but the first of a stack is a return address,
		// looked up minus one: make them all return addresses.
		if tt.fr.Kind == symbolizer.KindKernel {
			kstack = append(kstack, tt.addr)
		} else {
			ustack = append(ustack, tt.addr)
		}
	}
	kstack = append([]uint64{0xffffffff81000001}, kstack...)
	ustack = append([]uint64{0x400001}, ustack...)
	res.frames[0xffffffff81000002] = symbolizer.Frame{Kind: symbolizer.KindKernel, Mapping: kernelImg, Lines: line("leaf")}
	res.frames[0x400002] = symbolizer.Frame{Kind: symbolizer.KindUser, Mapping: exe, Lines: line("uleaf")}

	start := time.Unix(1700000000, 0)
	build := func() *profile.Profile {
		b := NewBuilder(res, 99, start)
		b.Add(sampler.Sample{Pid: 7, Comm: "node", Kernel: kstack, User: ustack, Count: 1})
		p, err := b.Build(start.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := profile.Parse(&buf)
		if err != nil {
			t.Fatal(err)
		}
		return back
	}
	p := build()
	merged, err := profile.Merge([]*profile.Profile{p, build()})
	if err != nil {
		t.Fatal(err)
	}
	for which, p := range map[string]*profile.Profile{"built": p, "merged": merged} {
		byName := map[string]*profile.Location{}
		for _, l := range p.Location {
			byName[l.Line[0].Function.Name] = l
		}
		for _, tt := range tests {
			l := byName[tt.name]
			if l == nil {
				t.Errorf("%s: no location %s", which, tt.name)
				continue
			}
			var file string
			if l.Mapping != nil {
				file = l.Mapping.File
			}
			if file != tt.file {
				t.Errorf("%s: %s is in mapping %q, want %q", which, tt.name, file, tt.file)
			}
			if got := FrameKind(l); got != tt.fr.Kind {
				t.Errorf("%s: FrameKind(%s in %q) = %v, symbolizer said %v", which, tt.name, file, got, tt.fr.Kind)
			}
		}
	}
	if anon.File != "" {
		t.Errorf("the Builder renamed the symbolizer's mapping: %q", anon.File)
	}
}
