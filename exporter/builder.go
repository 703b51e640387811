package exporter

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// Resolver names addresses. *symbolizer.Symbolizer is one.
type Resolver interface {
	// ResolveUser names the user-space address addr of process pid. The
	// builder passes return addresses minus one, so that a call's frame
	// names the call site and not the instruction after it.
	ResolveUser(pid uint32, addr uint64) symbolizer.Frame
	ResolveKernel(addr uint64) symbolizer.Frame
}

// Names of the pseudo frames that mark what the kernel could not give us.
const (
	FrameUserStackLost   = "[user stack lost]"
	FrameKernelStackLost = "[kernel stack lost]"
	FrameNoStack         = "[no stack]"
	// FrameTruncated is the outermost frame of a user stack whose walk
	// stopped before the stack's end (too deep, unreadable memory).
	FrameTruncated = "[truncated]"
	// FrameUnknownCaller sits between a user leaf and the next address
	// when the leaf was walked by frame pointer without an unwind table:
	// a leaf that keeps no frame record hides its caller from that walk,
	// so the next address may be the caller's caller.
	FrameUnknownCaller = "[unknown caller]"
)

// Builder accumulates samples into one CPU profile. It is not safe for
// concurrent use.
type Builder struct {
	res    Resolver
	period int64 // nanoseconds of CPU one sample stands for
	start  time.Time

	p         *profile.Profile
	mappings  map[*symbolizer.Mapping]*profile.Mapping
	functions map[funcKey]*profile.Function
	locations map[locKey]*profile.Location
	pseudos   map[string]*profile.Location
	samples   map[string]*profile.Sample
	keyBuf    []byte
	locBuf    []*profile.Location

	// Mappings under the names of MappingJIT: anonymous ones renamed
	// "[jit]", and those for kernel and JIT frames the symbolizer has none
	// for.
	jit               map[*symbolizer.Mapping]*symbolizer.Mapping
	kernelAny, jitAny symbolizer.Mapping

	// Samples per process, and the process set by SetMainProcess (0:
	// none), to choose the main mapping.
	pidSamples map[uint32]int64
	mainPid    uint32

	noProcs bool // see WithoutProcesses
	// With noProcs, the location of each file offset of a mapped file,
	// whatever the process: the same code of two processes is one
	// location (their addresses differ, by ASLR).
	fileLocs map[fileLoc]*profile.Location
}

type fileLoc struct {
	file, buildID string
	off           uint64
	call          bool
}

// ExecutableResolver is a Resolver that knows each process's executable
// mapping; *symbolizer.Symbolizer is one. With it, the Builder puts the
// executable of the profile's main process first among the mappings:
// pprof takes the first mapping as the profile's main binary (the "File:"
// of its reports).
type ExecutableResolver interface {
	Resolver
	Executable(pid uint32) *symbolizer.Mapping
}

type funcKey struct {
	name, system, file string
	startLine          int64
}

type locKey struct {
	pid    uint32 // 0 for kernel addresses
	kernel bool
	addr   uint64
	// call is set for return addresses, which are looked up at addr-1:
	// the same address met as a leaf may name another line.
	call bool
}

// NewBuilder starts a profile whose samples were taken at frequencyHz per
// CPU, from start on.
func NewBuilder(res Resolver, frequencyHz int, start time.Time) *Builder {
	if frequencyHz <= 0 {
		frequencyHz = 99
	}
	period := int64(time.Second) / int64(frequencyHz)
	b := &Builder{
		res:    res,
		period: period,
		start:  start,
		p: &profile.Profile{
			SampleType: []*profile.ValueType{
				{Type: "samples", Unit: "count"},
				{Type: "cpu", Unit: "nanoseconds"},
			},
			DefaultSampleType: "cpu",
			PeriodType:        &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
			Period:            period,
			TimeNanos:         start.UnixNano(),
		},
		mappings:  map[*symbolizer.Mapping]*profile.Mapping{},
		functions: map[funcKey]*profile.Function{},
		locations: map[locKey]*profile.Location{},
		pseudos:   map[string]*profile.Location{},
		samples:   map[string]*profile.Sample{},
		jit:       map[*symbolizer.Mapping]*symbolizer.Mapping{},
		kernelAny: symbolizer.Mapping{Start: kernelHalf, Limit: ^uint64(0), File: MappingKernel},
		jitAny:    symbolizer.Mapping{Limit: userLimit, File: MappingJIT},

		pidSamples: map[uint32]int64{},
	}
	return b
}

// WithoutProcesses makes the samples carry no pid and tid labels, so that
// the same stack of many processes is one sample: for a profile of all
// targets of a window (store.PutWindowMerged), read where no filter needs
// them, on a host whose processes come and go by the hundred. It returns
// b, and must be called before Add.
func (b *Builder) WithoutProcesses() *Builder {
	b.noProcs = true
	b.fileLocs = map[fileLoc]*profile.Location{}
	return b
}

// Samples is the number of samples added so far.
func (b *Builder) Samples() int64 {
	var n int64
	for _, s := range b.p.Sample {
		n += s.Value[0]
	}
	return n
}

// Add resolves the addresses of s and adds it to the profile.
func (b *Builder) Add(s sampler.Sample) { b.AddLabeled(s, "", nil) }

// AddLabeled is Add with labels added to the sample's labels (besides
// comm, pid and tid), for a profile of several targets: each sample keeps
// its target's labels. setKey identifies the label set (samples that
// differ only in it stay apart); labels is read, not kept.
func (b *Builder) AddLabeled(s sampler.Sample, setKey string, labels map[string]string) {
	if s.Count == 0 {
		return
	}
	b.pidSamples[s.Pid] += int64(s.Count)
	locs := b.locBuf[:0]
	// The first address of each stack is where the CPU was (the user
	// stack's first address is the interrupted or syscall-returning user
	// instruction, exact even when kernel frames sit above it); every
	// other one is a return address, named by the call instruction before
	// it.
	leaf := true
	lookup := func(k locKey) uint64 {
		if k.call {
			return k.addr - 1
		}
		return k.addr
	}
	if s.KernelLost {
		locs = append(locs, b.pseudo(FrameKernelStackLost))
	}
	for _, a := range s.Kernel {
		k := locKey{kernel: true, addr: a, call: !leaf}
		locs = append(locs, b.location(k, func() symbolizer.Frame { return b.res.ResolveKernel(lookup(k)) }))
		leaf = false
	}
	if s.UserLost {
		locs = append(locs, b.pseudo(FrameUserStackLost))
	}
	leaf = true
	for _, a := range s.User {
		k := locKey{pid: s.Pid, addr: a, call: !leaf}
		locs = append(locs, b.location(k, func() symbolizer.Frame { return b.res.ResolveUser(s.Pid, lookup(k)) }))
		if leaf && s.UserCallerUnknown && len(s.User) > 1 {
			locs = append(locs, b.pseudo(FrameUnknownCaller))
		}
		leaf = false
	}
	if s.UserTruncated && len(s.User) > 0 {
		locs = append(locs, b.pseudo(FrameTruncated))
	}
	if len(locs) == 0 {
		locs = append(locs, b.pseudo(FrameNoStack))
	}
	b.locBuf = locs

	// Identical stacks of one thread (and name) are one pprof sample.
	key := b.keyBuf[:0]
	if !b.noProcs {
		key = strconv.AppendUint(key, uint64(s.Pid), 10)
		key = append(key, 0)
		key = strconv.AppendUint(key, uint64(s.Tid), 10)
	}
	key = append(key, 0)
	key = append(key, s.Comm...)
	key = append(key, 0)
	key = append(key, setKey...)
	for _, l := range locs {
		key = append(key, 0)
		key = strconv.AppendUint(key, l.ID, 36)
	}
	b.keyBuf = key
	if ps, ok := b.samples[string(key)]; ok {
		ps.Value[0] += int64(s.Count)
		ps.Value[1] += int64(s.Count) * b.period
		return
	}
	ps := &profile.Sample{
		Location: append([]*profile.Location(nil), locs...),
		Value:    []int64{int64(s.Count), int64(s.Count) * b.period},
		Label:    make(map[string][]string, 1+len(labels)),
	}
	if !b.noProcs {
		ps.NumLabel = map[string][]int64{"pid": {int64(s.Pid)}, "tid": {int64(s.Tid)}}
	}
	for k, v := range labels {
		if k != "pid" && k != "tid" { // numeric labels of every sample
			ps.Label[k] = []string{v}
		}
	}
	ps.Label["comm"] = []string{s.Comm}
	b.samples[string(key)] = ps
	b.p.Sample = append(b.p.Sample, ps)
}

// location returns the Location of k, resolving it the first time.
func (b *Builder) location(k locKey, resolve func() symbolizer.Frame) *profile.Location {
	if l, ok := b.locations[k]; ok {
		return l
	}
	fr := resolve()
	m := b.filedUnder(fr)
	var fk fileLoc
	if b.noProcs && !k.kernel && m != nil && m.File != "" && m.File != MappingJIT && k.addr >= m.Start {
		fk = fileLoc{m.File, m.BuildID, k.addr - m.Start + m.Offset, k.call}
		if l, ok := b.fileLocs[fk]; ok {
			b.locations[k] = l
			return l
		}
	}
	l := &profile.Location{
		ID:      uint64(len(b.p.Location) + 1),
		Address: k.addr,
		Mapping: b.mapping(m, fr.Lines),
	}
	if fk.file != "" {
		b.fileLocs[fk] = l
	}
	for _, ln := range fr.Lines {
		l.Line = append(l.Line, profile.Line{
			Function: b.function(ln),
			Line:     ln.Line,
		})
	}
	if len(l.Line) == 0 {
		l.Line = []profile.Line{{Function: b.function(symbolizer.Line{Function: fmt.Sprintf("0x%x", k.addr)})}}
	}
	b.locations[k] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

// pseudo returns a location with no address that names a condition.
func (b *Builder) pseudo(name string) *profile.Location {
	if l, ok := b.pseudos[name]; ok {
		return l
	}
	l := &profile.Location{
		ID:   uint64(len(b.p.Location) + 1),
		Line: []profile.Line{{Function: b.function(symbolizer.Line{Function: name})}},
	}
	b.pseudos[name] = l
	b.p.Location = append(b.p.Location, l)
	return l
}

// filedUnder returns the mapping fr goes under in the profile, named by the
// convention of MappingJIT: a JIT frame's anonymous mapping is renamed
// "[jit]", and a kernel or JIT frame in no mapping the symbolizer knows gets
// one spanning the kernel or user half of the address space, so that every
// kernel and JIT frame says its kind by its mapping.
func (b *Builder) filedUnder(fr symbolizer.Frame) *symbolizer.Mapping {
	switch {
	case fr.Kind == symbolizer.KindKernel && fr.Mapping == nil:
		return &b.kernelAny
	case fr.Kind == symbolizer.KindJIT && fr.Mapping == nil:
		return &b.jitAny
	case fr.Kind == symbolizer.KindJIT && fr.Mapping.File != MappingJIT:
		m, ok := b.jit[fr.Mapping]
		if !ok {
			c := *fr.Mapping
			c.File = MappingJIT
			m = &c
			b.jit[fr.Mapping] = m
		}
		return m
	}
	return fr.Mapping
}

func (b *Builder) mapping(m *symbolizer.Mapping, lines []symbolizer.Line) *profile.Mapping {
	if m == nil {
		return nil
	}
	pm, ok := b.mappings[m]
	if !ok {
		pm = &profile.Mapping{
			ID:      uint64(len(b.p.Mapping) + 1),
			Start:   m.Start,
			Limit:   m.Limit,
			Offset:  m.Offset,
			File:    m.File,
			BuildID: m.BuildID,
		}
		b.mappings[m] = pm
		b.p.Mapping = append(b.p.Mapping, pm)
	}
	for _, ln := range lines {
		if ln.Function != "" {
			pm.HasFunctions = true
		}
		if ln.File != "" {
			pm.HasFilenames = true
		}
		if ln.Line != 0 {
			pm.HasLineNumbers = true
		}
	}
	if len(lines) > 1 {
		pm.HasInlineFrames = true
	}
	return pm
}

func (b *Builder) function(ln symbolizer.Line) *profile.Function {
	sys := ln.SystemName
	if sys == "" {
		sys = ln.Function
	}
	k := funcKey{ln.Function, sys, ln.File, ln.StartLine}
	if f, ok := b.functions[k]; ok {
		return f
	}
	f := &profile.Function{
		ID:         uint64(len(b.p.Function) + 1),
		Name:       ln.Function,
		SystemName: sys,
		Filename:   ln.File,
		StartLine:  ln.StartLine,
	}
	b.functions[k] = f
	b.p.Function = append(b.p.Function, f)
	return f
}

// SetMainProcess names the process whose executable is the profile's main
// mapping (the first). Without it, the process with the most samples is
// the main one.
func (b *Builder) SetMainProcess(pid uint32) { b.mainPid = pid }

// mainCandidates bounds how many of the busiest processes are asked for
// their executable (kernel threads have none).
const mainCandidates = 8

// putMainFirst moves the main process's executable mapping to the front
// (adding it if no sample fell in it) and renumbers the mappings.
func (b *Builder) putMainFirst() {
	er, ok := b.res.(ExecutableResolver)
	if !ok {
		return
	}
	pids := []uint32{b.mainPid}
	if b.mainPid == 0 {
		pids = pids[:0]
		for pid := range b.pidSamples {
			if pid != 0 {
				pids = append(pids, pid)
			}
		}
		slices.SortFunc(pids, func(x, y uint32) int {
			if c := cmp.Compare(b.pidSamples[y], b.pidSamples[x]); c != 0 {
				return c
			}
			return cmp.Compare(x, y)
		})
		pids = pids[:min(len(pids), mainCandidates)]
	}
	for _, pid := range pids {
		m := er.Executable(pid)
		if m == nil {
			continue
		}
		pm := b.mapping(m, nil)
		i := slices.Index(b.p.Mapping, pm)
		copy(b.p.Mapping[1:i+1], b.p.Mapping[:i])
		b.p.Mapping[0] = pm
		for j, x := range b.p.Mapping {
			x.ID = uint64(j + 1)
		}
		return
	}
}

// Build returns the profile of every sample added, ending at end. The
// Builder must not be used afterwards.
func (b *Builder) Build(end time.Time) (*profile.Profile, error) {
	b.putMainFirst()
	b.p.DurationNanos = end.Sub(b.start).Nanoseconds()
	if b.p.DurationNanos < 0 {
		b.p.DurationNanos = 0
	}
	if err := b.p.CheckValid(); err != nil {
		return nil, fmt.Errorf("built an invalid profile: %w", err)
	}
	return b.p, nil
}
