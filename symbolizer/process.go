package symbolizer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	proc "github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/symbolizer/internal/perfmap"
)

// process is what we know of one observed process: its executable
// mappings and, for JIT code, its perf map.
type process struct {
	pid  uint32
	root string // <ProcRoot>/PID/root
	exe  string // the target of <ProcRoot>/PID/exe at the last read of the maps, "" if never readable

	mu       sync.Mutex
	maps     []*pmapping // executable mappings, sorted by start
	lastRead time.Time
	kmapsAt  time.Time // when the kernel's mappings were last asked for (kernelMapping)
	lastAt   time.Time // when the read lastMaps took from began
	perf     *perfMapState
}

// pmapping is one executable mapping of a process.
type pmapping struct {
	m    Mapping // handed out by pointer: stable for the process's life
	path string  // as in maps, for perf-map and anon checks
	anon bool    // no backing file (JIT, [anon:...])
	vdso bool
	obj  *object // nil when the file could not be opened
}

// mapsRereadInterval throttles re-reading /proc/PID/maps on addresses
// outside every known mapping (dlopen, new JIT regions).
const mapsRereadInterval = 500 * time.Millisecond

func (s *Symbolizer) procDir(pid uint32) string {
	return filepath.Join(s.opts.ProcRoot, strconv.FormatUint(uint64(pid), 10))
}

// readMaps (re)reads the process's maps, keeping the Mapping pointers (and
// objects) of mappings that did not change and opening the files of new
// ones. The maps come from the shared reads (proc.Snapshots): one that
// began at or after since and holds need (when not 0), else a new read.
// p.mu must be held.
func (s *Symbolizer) readMaps(p *process, since time.Time, need uint64) error {
	p.lastRead = time.Now()
	all, perr := s.pfiles.Maps().Read(s.procDir(p.pid), since, need)
	if perr != nil {
		if me := (*proc.MapsError)(nil); !errors.As(perr, &me) {
			s.lastMaps(p)
			return fmt.Errorf("symbolizer: pid %d: %w", p.pid, perr)
		}
	}
	ms := slices.DeleteFunc(all, func(m proc.Mapping) bool { return !m.Exec() })
	if len(ms) == 0 && perr == nil {
		// An exited process (a zombie) has no mappings left: keep the
		// ones read while it lived, for its last samples.
		s.lastMaps(p)
		return fmt.Errorf("symbolizer: pid %d: no mappings (exited)", p.pid)
	}
	// The executable with the maps, so that it follows an exec; a process
	// gone since keeps the one read while it lived.
	if exe, err := os.Readlink(filepath.Join(s.procDir(p.pid), "exe")); err == nil {
		p.exe = exe
	}
	if perr != nil {
		s.stats.parseErrors.Add(1)
		s.log.Warn("symbolizer: malformed maps", "pid", p.pid, "err", perr)
	}
	old := make(map[[3]uint64]*pmapping, len(p.maps))
	for _, pm := range p.maps {
		old[[3]uint64{pm.m.Start, pm.m.Limit, pm.m.Offset}] = pm
	}
	next := make([]*pmapping, 0, len(ms))
	opened := make(map[[2]uint64]*object) // dev, inode -> object, within this read
	for i := range ms {
		m := &ms[i]
		if pm := old[[3]uint64{m.Start, m.End, m.Offset}]; pm != nil && pm.path == m.Path {
			delete(old, [3]uint64{m.Start, m.End, m.Offset})
			next = append(next, pm)
			continue
		}
		next = append(next, s.newMapping(p, m, opened))
	}
	for _, pm := range old {
		if pm.obj != nil {
			s.files.release(pm.obj)
		}
	}
	slices.SortFunc(next, func(a, b *pmapping) int {
		if a.m.Start < b.m.Start {
			return -1
		}
		if a.m.Start > b.m.Start {
			return 1
		}
		return 0
	})
	p.maps = next
	return perr
}

// newMapping makes the pmapping of m, with the object of its file (see
// objectFor) when it has one; opened holds the objects already opened for
// other mappings of the same read, by device and inode. p.mu must be held.
func (s *Symbolizer) newMapping(p *process, m *proc.Mapping, opened map[[2]uint64]*object) *pmapping {
	pm := &pmapping{m: Mapping{Start: m.Start, Limit: m.End, Offset: m.Offset, File: m.Path}, path: m.Path}
	switch {
	case m.Path == "[vdso]":
		s.setVDSO(pm)
	case m.Path == "[vsyscall]":
	case m.Anonymous() && !m.Memfd():
		pm.anon = true
	default:
		key := [2]uint64{m.Dev, m.Inode}
		if o, ok := opened[key]; ok && o != nil {
			s.files.ref(o)
			pm.obj = o
		} else {
			pm.obj = s.objectFor(p, m)
			opened[key] = pm.obj
		}
		if pm.obj != nil {
			pm.m.BuildID = pm.obj.pf.BuildID
		}
	}
	return pm
}

// lastMaps adds to the mappings of p, a process that has exited, those
// of the last read of its maps (proc.Snapshots.Last) that p lacks: a read
// made for another user while it lived (the unwind-table worker's, for a
// sample deferred to user space, say) may hold libraries mapped after p's
// own read, which its later samples ran in; the kernel's list has only
// those its walker met. Mappings overlapping one of p's keep p's. p.mu
// must be held.
func (s *Symbolizer) lastMaps(p *process) {
	last, at, ok := s.pfiles.Maps().Last(s.procDir(p.pid))
	if !ok || !at.After(p.lastAt) {
		return
	}
	p.lastAt = at
	opened := make(map[[2]uint64]*object)
	for i := range last {
		m := &last[i]
		if !m.Exec() || p.overlaps(m.Start, m.End) {
			continue
		}
		p.insert(s.newMapping(p, m, opened), s.files)
	}
}

// setVDSO marks pm as the vDSO, named by the image of our own.
func (s *Symbolizer) setVDSO(pm *pmapping) {
	pm.vdso = true
	if v := s.vdsoObject(); v != nil {
		pm.m.BuildID = v.pf.BuildID
	}
}

// objectFor returns the object of the file m maps, with a new reference:
// the file open already with m's device and inode (the files cache holds
// it open, so no other file can have them), else the file opened
// (openMapping). A program that runs again and again, and the libraries
// every process maps, are found without opening anything.
func (s *Symbolizer) objectFor(p *process, m *proc.Mapping) *object {
	if o := s.openObject(p, m.Dev, m.Inode); o != nil {
		return o
	}
	return s.openMapping(p, m)
}

// openObject returns the object of the file with device dev and inode ino
// if the files cache holds it open, with a new reference; else nil.
func (s *Symbolizer) openObject(p *process, dev, ino uint64) *object {
	if ino == 0 {
		return nil
	}
	if pf := s.pfiles.ByInode(proc.Inode{Dev: dev, Ino: ino}); pf != nil {
		return s.files.objectOf(pf, p.root)
	}
	return nil
}

// openMapping opens the file of a mapping (through the shared
// proc.Files: map_files, which works for deleted files and other mount
// namespaces, else the process's root; parsed once for the symbolizer and
// the unwinder) and returns its shared object with a new reference.
func (s *Symbolizer) openMapping(p *process, m *proc.Mapping) *object {
	pf, err := s.pfiles.Open(s.procDir(p.pid), *m)
	if err != nil {
		var pe *proc.ParseError
		switch {
		case errors.As(err, &pe):
			s.stats.recoveredPanics.Add(1)
			s.log.Error("symbolizer: panic while opening file", "file", m.Path, "err", err, "stack", pe.Stack)
		case errors.Is(err, proc.ErrNotELF):
			s.stats.parseErrors.Add(1)
			s.log.Debug("symbolizer: not an ELF file", "file", m.Path, "err", err)
		default:
			s.log.Debug("symbolizer: cannot open mapped file", "pid", p.pid, "file", m.Path, "err", err)
		}
		return nil
	}
	return s.files.objectOf(pf, p.root)
}

// find returns the mapping containing addr. p.mu must be held.
func (p *process) find(addr uint64) *pmapping {
	i, found := slices.BinarySearchFunc(p.maps, addr, func(pm *pmapping, a uint64) int {
		if pm.m.Start < a {
			return -1
		}
		if pm.m.Start > a {
			return 1
		}
		return 0
	})
	if !found {
		i--
	}
	if i < 0 || addr >= p.maps[i].m.Limit {
		return nil
	}
	return p.maps[i]
}

// perfMapState follows a process's /tmp/perf-PID.map as it grows.
type perfMapState struct {
	path      string
	offset    int64 // bytes consumed so far
	table     perfmap.Table
	lastCheck time.Time
	failed    bool
}

// perfMapCheckInterval throttles checking a perf map for growth.
const perfMapCheckInterval = time.Second

// maxPerfMap bounds the bytes of one perf map we read.
const maxPerfMap = 256 << 20

// perfLookup names addr from the process's perf map. p.mu must be held.
func (s *Symbolizer) perfLookup(p *process, addr uint64) (string, bool) {
	if p.perf == nil {
		p.perf = &perfMapState{path: filepath.Join(p.root, "tmp", fmt.Sprintf("perf-%d.map", s.nsPid(p.pid)))}
	}
	st := p.perf
	if e, ok := st.table.Lookup(addr); ok {
		return e.Name, true
	}
	if st.failed || time.Since(st.lastCheck) < perfMapCheckInterval {
		return "", false
	}
	st.lastCheck = time.Now()
	f, err := os.Open(st.path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() <= st.offset {
		return "", false
	}
	if fi.Size() > maxPerfMap {
		st.failed = true
		s.log.Warn("symbolizer: perf map too large", "file", st.path, "bytes", fi.Size())
		return "", false
	}
	if _, err := f.Seek(st.offset, 0); err != nil {
		return "", false
	}
	n, bad, err := st.table.Append(f)
	st.offset += n
	s.stats.perfMapReloads.Add(1)
	if bad > 0 {
		s.stats.parseErrors.Add(uint64(bad))
	}
	if err != nil {
		st.failed = true
		s.log.Warn("symbolizer: perf map", "file", st.path, "err", err)
	}
	if e, ok := st.table.Lookup(addr); ok {
		return e.Name, true
	}
	return "", false
}

// nsPid returns the pid of pid inside its own pid namespace (the number a
// containerized JIT puts in its perf map's name).
func (s *Symbolizer) nsPid(pid uint32) uint32 {
	data, err := os.ReadFile(filepath.Join(s.procDir(pid), "status"))
	if err != nil {
		return pid
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if n, err := strconv.ParseUint(f[len(f)-1], 10, 32); err == nil {
					return uint32(n)
				}
			}
		}
	}
	return pid
}

// unknownLine names an address nothing resolves: the mapping's file base
// name and the file offset, or the pseudo path and the offset in it.
func unknownLine(pm *pmapping, addr uint64) Line {
	if pm == nil {
		return Line{Function: "[unknown]"}
	}
	name := pm.m.File
	switch {
	case name == "":
		name = "[anon]"
	case !strings.HasPrefix(name, "["):
		name = path.Base(name)
	}
	return Line{Function: fmt.Sprintf("%s+%#x", name, addr-pm.m.Start+pm.m.Offset)}
}
