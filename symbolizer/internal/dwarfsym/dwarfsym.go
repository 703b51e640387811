// Package dwarfsym resolves addresses of one ELF file to source lines with
// DWARF: function names with inlined frames, file and line.
//
// # Model
//
// DWARF describes code twice. The .debug_info tree holds one
// DW_TAG_subprogram per function with the address ranges of its code; a
// function whose body was inlined into another shows up inside the caller
// as a DW_TAG_inlined_subroutine whose ranges are the instructions that came
// from the callee, and whose DW_AT_call_file/DW_AT_call_line say where in
// the caller the call was. Inlined subroutines nest, so the ranges of one
// function form a tree. The .debug_line program, separately, maps every
// instruction address to the file and line it came from.
//
// The lines at an address pc are therefore: the innermost (deepest) range
// containing pc names the innermost function, and the line table gives its
// file:line; each enclosing inlined subroutine's call site gives the
// file:line in its parent, up to the real (out-of-line) function. This is
// what addr2line -f -i prints.
//
// # Representation
//
// Open reads only the compilation-unit headers and builds a sorted table
// of unit address ranges. The first lookup inside a unit loads that unit:
// its nested function ranges are flattened into disjoint segments, each
// naming the deepest function node covering it (a node knows its parent
// and its call site), and its line rows are sorted by address. Resolve is
// then two binary searches and a walk up the node parents; it allocates
// only the returned slice.
//
// # Where the DWARF comes from
//
// The file itself when it has .debug_info (plain, SHF_COMPRESSED zlib or
// zstd, or legacy .zdebug, all decoded by debug/elf); else a separate
// debug file found by GNU build id under the debug directories
// (<dir>/.build-id/xx/yyyy.debug) or by .gnu_debuglink (next to the file,
// in its .debug/ subdirectory, or under <dir>/<file's dir>/), with the
// link's CRC checked. Every path is tried under the process's root
// directory first and on the host second. A file with neither but with
// MiniDebugInfo (.gnu_debugdata, an xz-compressed ELF holding a symbol
// table) yields a Table of function names only.
//
// # Limits
//
// Input is hostile (files come from containers): section sizes, units,
// nodes, rows, nesting depth and reference chains are capped, and
// malformed data yields errors naming the file, the unit and the offset,
// never a panic of this package's. debug/dwarf may still panic on crafted
// input: loading a unit runs under process.Guard (the unit then names
// nothing), and callers run Open under it too.
package dwarfsym

import (
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/scorch-profiler/scorch/internal/mapped"
	"github.com/scorch-profiler/scorch/internal/process"
)

// ErrNoDWARF is wrapped by Open's error when neither the file nor any
// separate debug file or MiniDebugInfo provides debug information.
var ErrNoDWARF = errors.New("no DWARF debug information")

// Line is one level of a (possibly inlined) call at an address.
type Line struct {
	Function  string // raw linkage name (mangled) when DWARF has one, else the DWARF name
	File      string // source file path as DWARF spells it, "" when unknown
	Line      int64  // 0 when unknown
	StartLine int64  // DW_AT_decl_line of the function, 0 when unknown
}

// Limits on what one file may make us hold. Exceeding one is an error
// (for the whole file, or for the one unit).
const (
	maxDebugBytes  = 512 << 20 // sum of uncompressed .debug_* sections
	maxUnits       = 1 << 20   // compilation units per file
	maxUnitNodes   = 1 << 22   // function nodes per unit
	maxUnitRows    = 1 << 24   // line rows per unit
	maxDepth       = 256       // DIE nesting depth
	maxRefHops     = 16        // DW_AT_abstract_origin/specification chain
	maxMiniDebug   = 64 << 20  // decompressed .gnu_debugdata
	maxSymbols     = 1 << 22   // symbols in a names-only table
	maxDebugLinkFS = 4 << 30   // size of a separate debug file we CRC
	// maxRatio bounds what a compressed section may decompress to, in
	// times its stored size: DWARF compresses 3 to 10 times with zlib or
	// zstd; a crafted stream, a thousand times and more.
	maxRatio = 100
)

// Table resolves addresses of one ELF file. It is safe for concurrent use.
type Table struct {
	path string      // for log and error messages
	data *dwarf.Data // nil in split mode

	// Split mode (see openDWARF): sec holds the debug sections and each
	// unit gets a dwarf.Data of its own bytes of .debug_info while it
	// loads, so that the abbreviation tables of every unit are not held.
	sec map[string][]byte

	units    []unit
	unitRngs []unitRange // sorted, disjoint

	syms []symbol // names-only table (MiniDebugInfo), sorted by lo

	exec []addrRange // executable PT_LOAD ranges; addresses elsewhere are stale

	regions []*mapped.Region // the sections' bytes, unmapped with the Table

	panicked atomic.Pointer[process.ParseError] // the first unit whose parsing panicked (FuzzOpen)

	mu   sync.Mutex // serializes unit loads (one user of data at a time)
	size atomic.Int64
}

type addrRange struct{ lo, hi uint64 }

type unitRange struct {
	lo, hi uint64
	unit   int32
}

type unit struct {
	off        dwarf.Offset // of the DW_TAG_compile_unit entry (in split mode, relative to start)
	start, end uint64       // the unit's bytes of .debug_info (split mode)
	loaded     atomic.Pointer[loadedUnit]
}

// unitData returns the dwarf.Data to read unit u with.
func (t *Table) unitData(u int32) (*dwarf.Data, error) {
	if t.sec == nil {
		return t.data, nil
	}
	un := &t.units[u]
	return newData(t.sec, t.sec["info"][un.start:un.end])
}

// Open reads the DWARF of f (following separate debug files found by build
// id under debugDirs and by .gnu_debuglink, and .gnu_debugdata) and returns
// a resolver, or an error wrapping ErrNoDWARF when there is none. path is
// the file's path as the process sees it (used to find debug-link files
// next to it); rootDir is the prefix under which the process's files are
// seen (e.g. /proc/PID/root), "" for the host. A nil debugDirs means
// {"/usr/lib/debug"}. f must stay usable only for the duration of Open.
func Open(f *elf.File, path, rootDir string, debugDirs []string) (t *Table, err error) {
	return OpenFile(f, nil, path, rootDir, debugDirs, "")
}

// OpenFile is Open reading f's sections from r, the file f was opened
// from. When r (or a separate debug file) is an *os.File, uncompressed
// debug sections are mapped rather than read into memory (see package
// mapped): lookups that load a unit must then run under process.Guard when
// the file could be truncated. Compressed sections are decompressed into
// a file in spillDir and mapped (see mapped.Spill), or onto the heap when
// spillDir is "". The pages of mapped sections are dropped from the
// process once the unit index is built and after each unit is parsed
// (mapped.Region.DropPages): only loading a unit reads them afterwards.
//
// Open and the lookups parse an untrusted file with debug/dwarf, which may
// panic on crafted input: callers run them under process.Guard, the one
// recover boundary, which counts the file and skips it.
func OpenFile(f *elf.File, r io.ReaderAt, path, rootDir string, debugDirs []string, spillDir string) (t *Table, err error) {
	if debugDirs == nil {
		debugDirs = []string{"/usr/lib/debug"}
	}
	exec := execRanges(f)
	if hasDWARF(f) {
		return openDWARF(f, r, path, exec, spillDir)
	}
	df, dpath, ferr := findDebugFile(f, path, rootDir, debugDirs)
	if df != nil {
		defer df.Close()
		return openDWARF(df.File, df.osf, dpath, exec, spillDir)
	}
	if mt, merr := openMiniDebugInfo(f, path); mt != nil || merr != nil {
		return mt, merr
	}
	if ferr != nil {
		return nil, fmt.Errorf("dwarfsym: %s: %w (%v)", path, ErrNoDWARF, ferr)
	}
	return nil, fmt.Errorf("dwarfsym: %s: %w", path, ErrNoDWARF)
}

// hasDWARF reports whether f carries its own .debug_info with contents.
func hasDWARF(f *elf.File) bool {
	for _, name := range []string{".debug_info", ".zdebug_info"} {
		if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS && s.FileSize > 0 {
			return true
		}
	}
	return false
}

// execRanges returns the executable PT_LOAD ranges of f. DWARF describing
// code outside them (functions discarded at link time, relocated to 0 or
// a tombstone) is ignored.
func execRanges(f *elf.File) []addrRange {
	var rs []addrRange
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && p.Memsz > 0 && p.Vaddr+p.Memsz > p.Vaddr {
			rs = append(rs, addrRange{p.Vaddr, p.Vaddr + p.Memsz})
		}
	}
	return rs
}

// validCode reports whether [lo, hi) is plausible code of the file.
func (t *Table) validCode(lo, hi uint64) bool {
	if hi <= lo {
		return false
	}
	if len(t.exec) == 0 {
		return lo != 0
	}
	for _, r := range t.exec {
		if lo >= r.lo && lo < r.hi {
			return true
		}
	}
	return false
}

// openDWARF builds the unit table of the DWARF in df (which may be a
// separate debug file); exec comes from the original file.
func openDWARF(df *elf.File, r io.ReaderAt, path string, exec []addrRange, spillDir string) (*Table, error) {
	sec, regions, held, err := loadDWARF(df, r, spillDir)
	if err != nil { // loadDWARF closed its regions
		return nil, fmt.Errorf("dwarfsym: %s: %w", path, err)
	}
	t := &Table{path: path, exec: exec, regions: regions}
	for _, reg := range regions {
		mapped.Attach(t, reg)
	}
	t.size.Store(int64(held))

	// debug/dwarf parses the abbreviation table of every unit up front
	// and keeps them: for a file whose units each have their own (glibc's
	// debug file: 2,000 units, 14 MB of parsed tables) that is most of
	// the memory. Such files are read one unit at a time instead, which
	// is exact as long as no entry refers into another unit.
	var bounds [][2]uint64
	if df.ByteOrder == binary.LittleEndian {
		bounds = unitBounds(sec["info"], sec["abbrev"])
	}
	type cuEntry struct {
		d          *dwarf.Data
		e          *dwarf.Entry
		start, end uint64
	}
	var next func() (*cuEntry, error)
	if bounds != nil {
		t.sec = sec
		i := 0
		next = func() (*cuEntry, error) {
			for ; i < len(bounds); i++ {
				b := bounds[i]
				d, err := newData(sec, sec["info"][b[0]:b[1]])
				if err != nil {
					return nil, err
				}
				e, err := d.Reader().Next()
				if err != nil {
					return nil, err
				}
				if e == nil || (e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit) {
					continue // type units, skeleton units: no code
				}
				i++
				return &cuEntry{d, e, b[0], b[1]}, nil
			}
			return nil, nil
		}
	} else {
		if t.data, err = newData(sec, sec["info"]); err != nil {
			return nil, fmt.Errorf("dwarfsym: %s: %w", path, err)
		}
		rd := t.data.Reader()
		next = func() (*cuEntry, error) {
			for {
				e, err := rd.Next()
				if err != nil || e == nil {
					return nil, err
				}
				if e.Tag != dwarf.TagCompileUnit && e.Tag != dwarf.TagPartialUnit {
					// Type units, skeleton units: no code.
					rd.SkipChildren()
					continue
				}
				rd.SkipChildren()
				return &cuEntry{d: t.data, e: e}, nil
			}
		}
	}

	var rngs []unitRange
	for {
		cu, err := next()
		if err != nil {
			return nil, fmt.Errorf("dwarfsym: %s: reading unit %d: %w", path, len(t.units), err)
		}
		if cu == nil {
			break
		}
		if len(t.units) >= maxUnits {
			return nil, fmt.Errorf("dwarfsym: %s: more than %d compilation units", path, maxUnits)
		}
		idx := int32(len(t.units))
		t.units = append(t.units, unit{off: cu.e.Offset, start: cu.start, end: cu.end})
		rs, rerr := cu.d.Ranges(cu.e)
		if rerr != nil || len(rs) == 0 {
			// No usable unit ranges: load the unit now and take the ranges
			// of its functions.
			lu := t.loadUnit(idx)
			rs = lu.coverage()
		}
		for _, x := range rs {
			if t.validCode(x[0], x[1]) {
				rngs = append(rngs, unitRange{x[0], x[1], idx})
			}
		}
	}
	if len(t.units) == 0 {
		return nil, fmt.Errorf("dwarfsym: %s: %w (no compilation units)", path, ErrNoDWARF)
	}
	t.unitRngs = disjointUnitRanges(rngs)
	t.size.Add(int64(len(t.units))*40 + int64(len(t.unitRngs))*24)
	// Building the index read every unit's header: most pages of
	// .debug_info. Lookups read a few units again; the rest need not stay
	// resident (glibc's debug file: 9 MB).
	t.DropPages()
	return t, nil
}

// DropPages takes the pages of the mapped debug sections out of the
// process's resident memory (see mapped.Region.DropPages); lookups fault
// back in those they read. Safe to call while lookups run.
func (t *Table) DropPages() {
	for _, reg := range t.regions {
		reg.DropPages()
	}
}

// minSplitAbbrevs is the number of distinct abbreviation tables from which
// a file is read one unit at a time. Below it (Go, Rust and most C++
// binaries share a few tables) holding them costs little, and reading
// units separately would parse a shared table again for every unit.
var minSplitAbbrevs = 64

// unitBounds returns the [start, end) of every unit of .debug_info when
// the file should be read one unit at a time: it has at least
// minSplitAbbrevs abbreviation tables and none of them has a form that
// refers outside its unit (DW_FORM_ref_addr, supplementary or alternate
// files) or hides its form (DW_FORM_indirect). Otherwise, or if a header
// is malformed (the whole-file reader then reports it), it returns nil.
func unitBounds(info, abbrev []byte) [][2]uint64 {
	var bounds [][2]uint64
	abbrevs := map[uint64]bool{}
	for off := uint64(0); off < uint64(len(info)); {
		if uint64(len(info))-off < 4 {
			return nil
		}
		length, hdr, offSize := uint64(binary.LittleEndian.Uint32(info[off:])), uint64(4), uint64(4)
		if length == 0xffffffff {
			if uint64(len(info))-off < 12 {
				return nil
			}
			length, hdr, offSize = binary.LittleEndian.Uint64(info[off+4:]), 12, 8
		} else if length >= 0xfffffff0 {
			return nil
		}
		end := off + hdr + length
		if length > uint64(len(info)) || end > uint64(len(info)) || length < 2+offSize+2 {
			return nil
		}
		version := binary.LittleEndian.Uint16(info[off+hdr:])
		at := off + hdr + 2 // abbrev offset (DWARF 2-4)
		switch {
		case version >= 2 && version <= 4:
		case version == 5:
			at += 2 // unit_type, address_size come first
		default:
			return nil
		}
		if at+offSize > end {
			return nil
		}
		var ab uint64
		if offSize == 4 {
			ab = uint64(binary.LittleEndian.Uint32(info[at:]))
		} else {
			ab = binary.LittleEndian.Uint64(info[at:])
		}
		abbrevs[ab] = true
		bounds = append(bounds, [2]uint64{off, end})
		off = end
	}
	if len(abbrevs) < minSplitAbbrevs {
		return nil
	}
	for ab := range abbrevs {
		if ab >= uint64(len(abbrev)) || !unitLocalForms(abbrev[ab:]) {
			return nil
		}
	}
	return bounds
}

// unitLocalForms reports whether the abbreviation table at the start of b
// is well formed and uses no form that refers outside the unit.
func unitLocalForms(b []byte) bool {
	uleb := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	for {
		code, ok := uleb()
		if !ok {
			return false
		}
		if code == 0 {
			return true
		}
		if _, ok := uleb(); !ok { // tag
			return false
		}
		if len(b) < 1 {
			return false
		}
		b = b[1:] // children
		for {
			attr, ok1 := uleb()
			form, ok2 := uleb()
			if !ok1 || !ok2 {
				return false
			}
			if attr == 0 && form == 0 {
				break
			}
			switch form {
			case 0x10, 0x16, 0x1c, 0x24, 0x1f20, 0x1f21: // ref_addr, indirect, ref_sup4, ref_sup8, GNU_ref_alt, GNU_strp_alt
				return false
			case 0x21: // implicit_const: a signed LEB128 value follows
				if _, n := binary.Varint(b); n <= 0 {
					return false
				}
				_, n := binary.Uvarint(b) // same length as the SLEB128 encoding
				b = b[n:]
			}
		}
	}
}

// newData makes a dwarf.Data of the sections in sec, with info as its
// .debug_info.
func newData(sec map[string][]byte, info []byte) (*dwarf.Data, error) {
	d, err := dwarf.New(sec["abbrev"], nil, nil, info, sec["line"], nil, sec["ranges"], sec["str"])
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"addr", "line_str", "str_offsets", "rnglists"} {
		if b := sec[name]; b != nil {
			if err := d.AddSection(".debug_"+name, b); err != nil {
				return nil, fmt.Errorf("section .debug_%s: %w", name, err)
			}
		}
	}
	return d, nil
}

// loadDWARF reads the debug sections of f that line and inline lookups
// need, decompressing SHF_COMPRESSED (zlib, zstd) and .zdebug sections.
// Unlike elf.File.DWARF it never trusts a size the file claims: sections
// are read incrementally, and all of them together may hold at most
// maxDebugBytes, so a crafted header cannot make us allocate more than
// the data really decompresses to. Uncompressed sections are mapped from r
// when it is a file, compressed ones decompressed into a mapped file of
// spillDir (mapped.Spill); the regions returned must live as long as the
// Data. It returns the bytes held: the file's own mapped sections count
// for a sixteenth (page cache, resident only where read), decompressed
// ones whole (heap, or disk in spillDir).
func loadDWARF(f *elf.File, r io.ReaderAt, spillDir string) (sec map[string][]byte, regions []*mapped.Region, held uint64, err error) {
	ok := false
	defer func() {
		if !ok { // an error, or a panic on the way out (Guard recovers it)
			for _, reg := range regions {
				reg.Close()
			}
			regions = nil
		}
	}()
	if f.Type == elf.ET_REL {
		// Relocatable objects need relocations applied, which
		// elf.File.DWARF does; they are not what processes map.
		return nil, nil, 0, errors.New("relocatable object (ET_REL)")
	}
	want := map[string]bool{"abbrev": true, "info": true, "line": true, "ranges": true, "str": true,
		"addr": true, "line_str": true, "str_offsets": true, "rnglists": true}
	sec = map[string][]byte{}
	budget := uint64(maxDebugBytes)
	for _, s := range f.Sections {
		var name string
		switch {
		case strings.HasPrefix(s.Name, ".debug_"):
			name = s.Name[len(".debug_"):]
		case strings.HasPrefix(s.Name, ".zdebug_"):
			name = s.Name[len(".zdebug_"):]
		}
		if !want[name] || s.Type == elf.SHT_NOBITS || sec[name] != nil {
			continue
		}
		if r != nil && s.Flags&elf.SHF_COMPRESSED == 0 && !strings.HasPrefix(s.Name, ".zdebug_") && s.FileSize == s.Size {
			if s.Size > budget {
				return nil, regions, 0, fmt.Errorf("debug sections hold more than %d bytes (at %s)", maxDebugBytes, s.Name)
			}
			reg, err := mapped.ReadAt(r, s.Offset, s.Size, budget)
			if err != nil {
				return nil, regions, 0, fmt.Errorf("section %s: %w", s.Name, err)
			}
			regions = append(regions, reg)
			budget -= s.Size
			if reg.Mapped() {
				held += s.Size / 16
			} else {
				held += s.Size
			}
			sec[name] = reg.Bytes()
			continue
		}
		// Compressed (or not stored as they are in the file): the
		// decompressed bytes, in a mapped file of spillDir when there is
		// one. They count whole against the symbol cache's bound, which so
		// bounds the disk they take too; and at most maxRatio times the
		// stored bytes, so that a few KiB of crafted zlib cannot make us
		// write or allocate the whole budget.
		limit := min(budget, maxRatio*max(s.FileSize, 1))
		reg, err := mapped.Spill(spillDir, func() io.Reader { return s.Open() }, limit)
		if err != nil {
			return nil, regions, 0, fmt.Errorf("section %s (%d bytes stored): %w (limits: %d times the stored bytes, %d bytes of debug sections)", s.Name, s.FileSize, err, maxRatio, maxDebugBytes)
		}
		regions = append(regions, reg)
		data := reg.Bytes()
		budget -= uint64(len(data))
		held += uint64(len(data))
		sec[name] = data
	}
	if len(sec["info"]) == 0 {
		return nil, regions, 0, ErrNoDWARF
	}
	ok = true
	return sec, regions, held, nil
}

// disjointUnitRanges sorts rs and trims overlaps (the first unit wins).
func disjointUnitRanges(rs []unitRange) []unitRange {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].lo != rs[j].lo {
			return rs[i].lo < rs[j].lo
		}
		return rs[i].hi > rs[j].hi
	})
	out := rs[:0]
	var end uint64
	for _, r := range rs {
		if len(out) > 0 && r.lo < end {
			if r.hi <= end {
				continue
			}
			r.lo = end
		}
		if n := len(out); n > 0 && out[n-1].hi == r.lo && out[n-1].unit == r.unit {
			out[n-1].hi = r.hi
		} else {
			out = append(out, r)
		}
		end = r.hi
	}
	return out
}

// Resolve returns the lines at the ELF virtual address pc, innermost (most
// inlined) first; nil when pc is in no known function.
func (t *Table) Resolve(pc uint64) []Line {
	if t == nil {
		return nil
	}
	if t.syms != nil {
		return t.resolveSym(pc)
	}
	rs := t.unitRngs
	i := sort.Search(len(rs), func(i int) bool { return rs[i].lo > pc }) - 1
	if i < 0 || pc >= rs[i].hi {
		return nil
	}
	u := rs[i].unit
	lu := t.units[u].loaded.Load()
	if lu == nil {
		lu = t.loadUnit(u)
	}
	return lu.resolve(pc)
}

// Size estimates the bytes the table holds, for the cache bound: the
// decompressed debug sections plus the units loaded so far (it grows as
// lookups load units).
func (t *Table) Size() int64 {
	if t == nil {
		return 0
	}
	return t.size.Load()
}

// loadUnit parses unit u once; a malformed unit is logged and resolves
// nothing.
func (t *Table) loadUnit(u int32) *loadedUnit {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer runtime.KeepAlive(t) // the debug sections may be mapped: see OpenFile
	un := &t.units[u]
	if lu := un.loaded.Load(); lu != nil {
		return lu
	}
	// A panic in debug/dwarf on one unit (crafted input, or a form it
	// does not know) costs that unit, not the file: the one recover
	// boundary, process.Guard, at the unit.
	var lu *loadedUnit
	err := process.Guard(t.path, func() (err error) {
		lu, err = t.parseUnit(u)
		return err
	})
	if pe, ok := err.(*process.ParseError); ok {
		t.panicked.CompareAndSwap(nil, pe)
	}
	if err != nil {
		slog.Warn("dwarfsym: skipping malformed compilation unit", "file", t.path, "unit_offset", uint64(un.off), "err", err)
		lu = &loadedUnit{}
	}
	t.size.Add(lu.bytes())
	un.loaded.Store(lu)
	// The unit is parsed: its bytes are not read again (only loading a
	// unit reads the sections after Open). Glibc's or CPython's biggest
	// units (ceval.c) hold megabytes of DWARF, which would otherwise stay
	// resident until the file is closed.
	t.DropPages()
	return lu
}
