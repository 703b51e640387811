package symbolizer

import (
	"cmp"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	proc "github.com/scorch-profiler/scorch/internal/process"
)

// Symbolizer resolves user and kernel addresses. It is safe for concurrent
// use.
type Symbolizer struct {
	opts  Options
	log   *slog.Logger
	dem   *demangler
	files *fileCache
	kern  *kernel
	kmaps func(pid uint32) []proc.Mapping

	mu    sync.Mutex
	procs map[uint32]*process

	pfiles   *proc.Files // the opened files (see Files)
	vdsoOnce sync.Once
	vdso     *object

	// stripped holds the files already noted as stripped.
	stripped onceSet

	stats counters
}

type counters struct {
	userLookups, kernelLookups                                    atomic.Uint64
	missNoMapping, missNoFile, missNoSymbol, missJIT, missKernel  atomic.Uint64
	parseErrors, recoveredPanics, kallsymsReloads, perfMapReloads atomic.Uint64
	kernelMappings                                                atomic.Uint64
}

// maxStrippedNotes bounds the set of files noted as stripped.
const maxStrippedNotes = 4096

// New returns a Symbolizer. Zero Options fields take their defaults.
func New(opts Options) *Symbolizer {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 256 << 20
	}
	if opts.DebugDirs == nil {
		opts.DebugDirs = []string{"/usr/lib/debug"}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	pfiles := proc.NewFiles(0)
	s := &Symbolizer{
		opts:   opts,
		log:    opts.Logger,
		dem:    newDemangler(opts.Demangle),
		files:  newFileCache(opts.CacheBytes, pfiles),
		pfiles: pfiles,
		procs:  make(map[uint32]*process),
	}
	s.stripped.max = maxStrippedNotes
	s.kern = newKernel(s)
	return s
}

// UseKernelMappings makes the symbolizer ask f for the mappings of a
// process when an address is in none of those read from /proc/PID/maps.
// f returns the executable mappings of process pid as the kernel's
// unwinder learned them (Path "[vdso]" for the vDSO, Inode 0 for anonymous
// memory, else Dev and Inode name the file), or none; it must not block,
// as it is called with the process's lock held. The mappings of a process
// are read while it lives, when it is first sampled and again when the
// kernel meets a mapping new to it, but a process that lives 50 ms on a
// busy host can exit before either read, and the kernel still knows what
// its samples ran in. The files are found among the files already open, by
// device and inode (a program that runs again and again, a shared
// library), else by reading the maps again while the process lives. f is
// asked for all of a process's mappings at once, at most once per
// kernelMapsInterval. Call it before the first lookup.
func (s *Symbolizer) UseKernelMappings(f func(pid uint32) []proc.Mapping) {
	s.kmaps = f
}

// kernelMapsInterval throttles asking the kernel for a process's mappings
// (kernelMapping): a batch of samples is named in milliseconds, and every
// mapping its samples ran in was in the kernel's map before it was
// drained, so one question per batch finds them all; the addresses the
// kernel knows no mapping of do not ask again, one by one. Batches are a
// second apart.
const kernelMapsInterval = 100 * time.Millisecond

// kernelMapping adds to p the mappings the kernel knows of (see
// UseKernelMappings) and returns the one holding addr, or nil. Those that
// overlap a mapping p has keep p's, but for the one holding addr, which p
// lacks; of the others, those of files not open yet wait for an address
// of theirs. p.mu must be held.
func (s *Symbolizer) kernelMapping(p *process, addr uint64) *pmapping {
	if s.kmaps == nil || (!p.kmapsAt.IsZero() && time.Since(p.kmapsAt) < kernelMapsInterval) {
		return nil
	}
	p.kmapsAt = time.Now()
	kms := s.kmaps(p.pid)
	var found *pmapping
	for _, m := range kms {
		holds := m.Start <= addr && addr < m.End
		if !holds && p.overlaps(m.Start, m.End) {
			continue
		}
		pm := &pmapping{m: Mapping{Start: m.Start, Limit: m.End, Offset: m.Offset, File: m.Path}, path: m.Path}
		switch {
		case m.Path == "[vdso]":
			s.setVDSO(pm)
		case m.Inode == 0:
			pm.anon = true
		default:
			pm.obj = s.openObject(p, m.Dev, m.Inode)
			if pm.obj == nil && !holds {
				continue // named when an address asks for it
			}
			if pm.obj == nil {
				// Not open yet: the maps name the file, while the process
				// lives.
				if s.readMaps(p, time.Now().Add(-mapsRereadInterval), addr) == nil {
					if pm := p.find(addr); pm != nil {
						return pm
					}
				}
				pm.m.File = "[unknown]"
			} else {
				pm.m.File, pm.path = pm.obj.path, pm.obj.path
				pm.m.BuildID = pm.obj.pf.BuildID
			}
		}
		s.stats.kernelMappings.Add(1)
		p.insert(pm, s.files)
		if holds {
			found = pm
		}
	}
	return found
}

// overlaps says whether one of p's mappings overlaps [start, end). p.mu
// must be held.
func (p *process) overlaps(start, end uint64) bool {
	for _, o := range p.maps {
		if o.m.Start < end && start < o.m.Limit {
			return true
		}
	}
	return false
}

// insert adds pm to p's mappings, in place of any it overlaps (an old
// mapping the process has since replaced). p.mu must be held.
func (p *process) insert(pm *pmapping, files *fileCache) {
	next := p.maps[:0:0]
	for _, o := range p.maps {
		if o.m.Start < pm.m.Limit && pm.m.Start < o.m.Limit {
			if o.obj != nil {
				files.release(o.obj)
			}
			continue
		}
		next = append(next, o)
	}
	i, _ := slices.BinarySearchFunc(next, pm.m.Start, func(o *pmapping, a uint64) int { return cmp.Compare(o.m.Start, a) })
	p.maps = slices.Insert(next, i, pm)
}

// Observe reads the memory map of pid and opens the executable files it
// maps, so that its addresses resolve even after it exits. It does nothing
// for a pid already observed. The error, for reporting only, says the
// process is gone or unreadable.
func (s *Symbolizer) Observe(pid uint32) error {
	_, err := s.process(pid)
	return err
}

// Refresh reads the memory map of pid again, while it is alive, keeping
// the files of mappings that did not change, or observes it if it was not
// observed. It is for the moments a process's image changes: its exec,
// and its first sample after one (a process first sampled inside execve,
// or before, had none of its new program mapped when it was observed; a
// 50 ms process is gone before any later chance to read it).
func (s *Symbolizer) Refresh(pid uint32) error {
	s.mu.Lock()
	p := s.procs[pid]
	s.mu.Unlock()
	if p == nil {
		return s.Observe(pid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A process that is gone keeps what was read while it lived, for its
	// last samples (readMaps changes nothing when it cannot read).
	return s.readMaps(p, time.Now(), 0)
}

// process returns the state of pid, observing it first if needed.
func (s *Symbolizer) process(pid uint32) (*process, error) {
	s.mu.Lock()
	p := s.procs[pid]
	if p == nil {
		p = &process{pid: pid, root: filepath.Join(s.procDir(pid), "root")}
		s.procs[pid] = p
		p.mu.Lock() // read the maps before anyone else uses p
		s.mu.Unlock()
		err := s.readMaps(p, time.Now(), 0)
		p.mu.Unlock()
		return p, err
	}
	s.mu.Unlock()
	return p, nil
}

// ResolveUser names the user-space address addr of process pid. Return
// addresses must already be adjusted (minus one) by the caller. It never
// fails: an address nothing names gets a Line saying where it is.
func (s *Symbolizer) ResolveUser(pid uint32, addr uint64) Frame {
	s.stats.userLookups.Add(1)
	p, _ := s.process(pid)
	p.mu.Lock()
	pm := p.find(addr)
	if pm == nil {
		pm = s.kernelMapping(p, addr)
	}
	if pm == nil && !p.lastRead.IsZero() && time.Since(p.lastRead) > mapsRereadInterval {
		// A library loaded or JIT region created since (another user's
		// read of the maps does, if recent and holding addr).
		s.readMaps(p, time.Now().Add(-mapsRereadInterval), addr)
		pm = p.find(addr)
	}
	if pm == nil || pm.anon {
		name, ok := s.perfLookup(p, addr)
		p.mu.Unlock()
		fr := Frame{Kind: KindJIT}
		if pm != nil {
			fr.Mapping = &pm.m
		}
		if ok {
			fr.Lines = []Line{s.dem.line(name, "", 0, 0)}
			return fr
		}
		if pm == nil {
			s.stats.missNoMapping.Add(1)
			return Frame{Kind: KindUser, Lines: []Line{{Function: "[unknown]"}}}
		}
		s.stats.missJIT.Add(1)
		fr.Lines = []Line{unknownLine(pm, addr)}
		return fr
	}
	p.mu.Unlock()

	fr := Frame{Kind: KindUser, Mapping: &pm.m}
	obj := pm.obj
	if pm.vdso {
		obj = s.vdsoObject()
	}
	if obj == nil {
		s.stats.missNoFile.Add(1)
		fr.Lines = []Line{unknownLine(pm, addr)}
		return fr
	}
	if !pm.vdso {
		s.files.touch(obj)
	}
	var lines []Line
	if pc, ok := proc.ELFAddr(obj.pf.Loads, proc.Mapping{Start: pm.m.Start, End: pm.m.Limit, Offset: pm.m.Offset}, addr); ok {
		lines = obj.resolve(s, pc, make([]Line, 0, 2))
	}
	if len(lines) == 0 {
		if obj.broken.Load() {
			s.stats.missNoFile.Add(1)
		} else {
			s.stats.missNoSymbol.Add(1)
		}
		lines = []Line{unknownLine(pm, addr)}
	}
	fr.Lines = lines
	return fr
}

// Executable returns the mapping of pid's executable (the file of
// /proc/PID/exe) among its executable mappings; nil when the process is
// not observed or its executable is unknown.
func (s *Symbolizer) Executable(pid uint32) *Mapping {
	s.mu.Lock()
	p := s.procs[pid]
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exe == "" {
		return nil
	}
	for _, pm := range p.maps {
		if pm.path == p.exe {
			return &pm.m
		}
	}
	return nil
}

// ExePath returns the path of pid's executable (the target of
// /proc/PID/exe) as read with its maps, the last time they were read; ok
// is false when the process is not observed or the link was unreadable.
func (s *Symbolizer) ExePath(pid uint32) (path string, ok bool) {
	s.mu.Lock()
	p := s.procs[pid]
	s.mu.Unlock()
	if p == nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exe, p.exe != ""
}

// Forget drops what is known of pid. Files no other process maps stay
// open for a minute (objectLinger) unless evicted sooner.
func (s *Symbolizer) Forget(pid uint32) {
	s.mu.Lock()
	p := s.procs[pid]
	delete(s.procs, pid)
	s.mu.Unlock()
	s.pfiles.Maps().Forget(s.procDir(pid))
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pm := range p.maps {
		if pm.obj != nil {
			s.files.release(pm.obj)
		}
	}
	p.maps = nil
	p.perf = nil
}

// Stats returns the counters.
func (s *Symbolizer) Stats() Stats {
	bytes, entries, files := s.files.stats()
	s.mu.Lock()
	n := len(s.procs)
	s.mu.Unlock()
	ms := s.pfiles.Maps().Stats()
	return Stats{
		UserLookups:     s.stats.userLookups.Load(),
		KernelLookups:   s.stats.kernelLookups.Load(),
		MissNoMapping:   s.stats.missNoMapping.Load(),
		MissNoFile:      s.stats.missNoFile.Load(),
		MissNoSymbol:    s.stats.missNoSymbol.Load(),
		MissJIT:         s.stats.missJIT.Load(),
		MissKernel:      s.stats.missKernel.Load(),
		Processes:       n,
		Files:           files,
		CacheBytes:      bytes,
		CacheEntries:    entries,
		CacheEvictions:  s.files.evicted.Load(),
		ParseErrors:     s.stats.parseErrors.Load(),
		RecoveredPanics: s.stats.recoveredPanics.Load(),
		KallsymsReloads: s.stats.kallsymsReloads.Load(),
		PerfMapReloads:  s.stats.perfMapReloads.Load(),
		MapsReads:       ms.Reads,
		MapsShared:      ms.Reused,
		KernelMappings:  s.stats.kernelMappings.Load(),
	}
}

// Files returns the cache of opened, parsed files the symbolizer reads,
// for the sampler's unwind-table worker to share (internal/profiler hands
// it over), so that each mapped file is opened and parsed once whichever
// asks first. It is closed with the symbolizer.
func (s *Symbolizer) Files() *proc.Files { return s.pfiles }

// Close releases every open file. The Symbolizer must not be used after.
func (s *Symbolizer) Close() error {
	s.mu.Lock()
	s.procs = make(map[uint32]*process)
	s.mu.Unlock()
	s.files.closeAll()
	s.pfiles.Close()
	return nil
}
