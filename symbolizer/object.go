package symbolizer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scorch-profiler/scorch/internal/gopclntab"
	proc "github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/symbolizer/internal/dwarfsym"
	"github.com/scorch-profiler/scorch/symbolizer/internal/elfsym"
)

// An object is the symbol tables of one ELF file, shared by every process
// that maps it (objects are keyed by the file's content key: its build
// id). It holds a reference to the opened, parsed file (internal/process's
// File, which the unwinder's table worker shares) so that its tables can
// be (re)loaded after the processes that mapped it are gone; the tables
// are what the cache bounds.
type object struct {
	key  string     // pf.ContentKey
	pf   *proc.File // released when the object is removed from the cache
	path string     // as first seen, for logs
	root string     // the first process's root, for separate debug files

	// Guarded by fileCache.mu.
	refs    int // processes mapping it
	lruPrev *object
	lruNext *object
	charged int64 // bytes counted in the cache for tabs
	// idleSince is when refs last dropped to 0 (see objectLinger).
	idleSince time.Time

	loadMu sync.Mutex
	tabs   atomic.Pointer[tables]
	broken atomic.Bool // a panic or malformed file: never resolves
}

// tables are the loaded symbol sources of an object, best first.
type tables struct {
	dwarf *dwarfsym.Table
	gopcl *gopclntab.Table

	// The symbol table is read with the others, except in Go binaries,
	// where the pclntab names everything but C code linked in with cgo:
	// there it is read on the first address the pclntab cannot name.
	syms     atomic.Pointer[elfsym.Table]
	symsOnce sync.Once
}

func (t *tables) size() int64 {
	n := int64(64)
	if t.dwarf != nil {
		n += t.dwarf.Size()
	}
	if t.gopcl != nil {
		n += t.gopcl.Size()
	}
	if syms := t.syms.Load(); syms != nil {
		n += syms.Size()
	}
	return n
}

// symbols returns the object's ELF symbol table, reading it on first use.
func (t *tables) symbols(o *object, s *Symbolizer) *elfsym.Table {
	t.symsOnce.Do(func() {
		if syms, err := elfsym.NewFrom(o.pf.ELF, o.pf.ReaderAt()); err == nil {
			t.syms.Store(syms)
		} else if !errors.Is(err, elfsym.ErrNoSymbols) {
			s.log.Debug("symbolizer: unusable symbol table", "file", o.path, "err", err)
		}
	})
	return t.syms.Load()
}

// load returns the object's tables, loading them on first use or after
// eviction. It returns nil for files that cannot be symbolized.
func (o *object) load(s *Symbolizer) *tables {
	if t := o.tabs.Load(); t != nil {
		return t
	}
	if o.broken.Load() {
		return nil
	}
	o.loadMu.Lock()
	defer o.loadMu.Unlock()
	if t := o.tabs.Load(); t != nil {
		return t
	}
	t, err := o.loadTables(s)
	if err != nil {
		o.broken.Store(true)
		var pe *proc.ParseError
		switch {
		case errors.As(err, &pe):
			s.stats.recoveredPanics.Add(1)
			s.log.Error("symbolizer: panic while parsing file, file will not be symbolized", "file", o.path, "err", err, "stack", pe.Stack)
		case errors.Is(err, errNoSymbols):
			// A stripped binary is no error (most distributions ship them):
			// a debug note, once per file however often it is reopened.
			if s.stripped.first(o.key + "\x00" + o.path) {
				s.log.Debug("symbolizer: file has no symbols (stripped); its frames are named file+offset", "file", o.path)
			}
		default:
			s.stats.parseErrors.Add(1)
			s.log.Warn("symbolizer: cannot symbolize file", "file", o.path, "err", err)
		}
		return nil
	}
	o.tabs.Store(t)
	s.files.charge(o, t.size())
	return t
}

// loadTables reads the object's symbol sources under proc.Guard (a panic,
// or a fault on a file truncated under its mapping, is a
// *proc.ParseError).
func (o *object) loadTables(s *Symbolizer) (*tables, error) {
	var t *tables
	err := proc.Guard(o.path, func() (err error) {
		t, err = o.readTables(s)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (o *object) readTables(s *Symbolizer) (*tables, error) {
	t := &tables{}
	// Go binaries: the pclntab is exact (with inlining), always present and
	// far smaller than Go's DWARF.
	if o.pf.IsGo {
		if g, err := gopclntab.Open(o.pf.ELF, o.pf.ReaderAt()); err == nil {
			t.gopcl = g
		} else {
			s.log.Debug("symbolizer: no usable pclntab", "file", o.path, "err", err)
		}
	}
	if t.gopcl == nil {
		// Under its own Guard: a panic in debug/dwarf (crafted input, or
		// an odd unit of a new compiler) costs the file its DWARF, not
		// its symbol table.
		var d *dwarfsym.Table
		err := proc.Guard(o.path, func() (err error) {
			d, err = openDWARF(o.pf.ELF, o.pf.ReaderAt(), o.path, o.root, s.opts.DebugDirs, s.opts.SpillDir)
			return err
		})
		var pe *proc.ParseError
		switch {
		case err == nil:
			t.dwarf = d
		case errors.As(err, &pe):
			s.stats.recoveredPanics.Add(1)
			s.log.Error("symbolizer: panic while reading DWARF, the file is named from its symbol table", "file", o.path, "err", err, "stack", pe.Stack)
		case !errors.Is(err, dwarfsym.ErrNoDWARF):
			s.log.Debug("symbolizer: unusable DWARF", "file", o.path, "err", err)
		}
	}
	if t.gopcl == nil && t.symbols(o, s) == nil && t.dwarf == nil {
		return nil, fmt.Errorf("%s: %w", o.path, errNoSymbols)
	}
	return t, nil
}

// errNoSymbols: a file without a symbol table, DWARF or pclntab (stripped).
var errNoSymbols = errors.New("no symbols, DWARF or pclntab")

// onceSet remembers keys seen, up to max of them (then it starts over), so
// that a note is logged once per key with bounded memory.
type onceSet struct {
	mu   sync.Mutex
	seen map[string]struct{}
	max  int
}

// first says whether key is new, and remembers it.
func (o *onceSet) first(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[key]; ok {
		return false
	}
	if o.seen == nil || len(o.seen) >= o.max {
		o.seen = make(map[string]struct{})
	}
	o.seen[key] = struct{}{}
	return true
}

// openDWARF is dwarfsym.OpenFile; a variable so that tests can count calls.
var openDWARF = dwarfsym.OpenFile

// resolve appends the lines at virtual address pc to buf. Lookups parse
// (DWARF units are read on first use), so they run under proc.Guard: after
// a panic, or a fault on a file truncated under its mapping, the file is
// never used again.
func (o *object) resolve(s *Symbolizer, pc uint64, buf []Line) []Line {
	t := o.load(s)
	if t == nil {
		return buf
	}
	out := buf
	err := proc.Guard(o.path, func() error { out = t.lookup(s, o, pc, buf); return nil })
	if pe, ok := err.(*proc.ParseError); ok { // the only error Guard can return here
		o.broken.Store(true)
		o.tabs.Store(nil)
		s.stats.recoveredPanics.Add(1)
		s.log.Error("symbolizer: panic while resolving, file will not be symbolized", "file", o.path, "pc", pc, "err", err, "stack", pe.Stack)
		return buf
	}
	return out
}

// lookup appends the lines at pc to buf, from the best source naming it.
func (t *tables) lookup(s *Symbolizer, o *object, pc uint64, buf []Line) []Line {
	if t.gopcl != nil {
		var fr [8]gopclntab.Frame
		frames := t.gopcl.Resolve(pc, fr[:0])
		for _, f := range frames {
			buf = append(buf, Line{Function: f.Function, File: f.File, Line: f.Line, StartLine: f.StartLine})
		}
		if len(frames) > 0 {
			return buf
		}
	}
	if t.dwarf != nil {
		lines := t.dwarf.Resolve(pc)
		for _, l := range lines {
			buf = append(buf, s.dem.line(l.Function, l.File, l.Line, l.StartLine))
		}
		if len(lines) > 0 {
			return buf
		}
	}
	if syms := t.symbols(o, s); syms != nil {
		if name, _, ok := syms.Lookup(pc); ok {
			buf = append(buf, s.dem.line(name, "", 0, 0))
		}
	}
	return buf
}
