// Package gopclntab resolves addresses of a Go binary with its runtime
// symbol table, the .gopclntab section that every Go binary carries even
// when stripped (-ldflags=-s -w): function names, file and line, and the
// frames the compiler inlined, read from the inline tree the runtime itself
// uses for tracebacks (FUNCDATA_InlTree indexed by PCDATA_InlTreeIndex, see
// runtime/symtabinl.go).
//
// The layout read here is that of Go 1.18 and later (pclntab magic
// 0xfffffff0 and 0xfffffff1). Older binaries are handled by debug/gosym
// without inlined frames.
package gopclntab

import (
	"bytes"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"

	"github.com/scorch-profiler/scorch/internal/mapped"
)

// ErrNotGo is returned by Open for files without a .gopclntab section.
var ErrNotGo = errors.New("gopclntab: not a Go binary")

// maxPclntab bounds the bytes read for the table and for the funcdata
// region holding the inline trees.
const maxPclntab = 512 << 20

// Frame is one (possibly inlined) function at an address.
type Frame struct {
	Function  string
	File      string
	Line      int64
	StartLine int64 // 0 when unknown
}

// Table resolves program counters of one Go binary. It is read-only after
// Open and safe for concurrent use.
type Table struct {
	bo        binary.ByteOrder
	ptrSize   int
	quantum   uint64 // instruction size unit of pc deltas
	go120     bool   // _func has startLine
	textStart uint64
	nfunc     int

	funcnames []byte // funcnametab; names are copied out of it
	files     []byte // filetab
	cutab     []byte
	pctab     []byte
	pcln      []byte // the function table and _func records
	functab   []byte // nfunc+1 (entryoff, funcoff) pairs

	// gofunc is the funcdata region (go:func.*): inline trees are at
	// gofunc[funcdata[FUNCDATA_InlTree]:]. Nil when not found; names and
	// lines still resolve, without inlined frames.
	gofunc []byte

	old *gosym.Table // pre-1.18 binaries

	// For Funcs and AppendSP: the layout of function records, and the
	// offset of pcln in the section, for errors.
	v116     bool   // Go 1.16/1.17: functab of (entry, funcoff) pointer pairs
	pclnOff  uint64 // pcln's offset in the section
	pctabOff uint64

	// mapped is whether the bytes above are mapped from the file (see
	// package mapped): they are unmapped when the Table is garbage.
	mapped bool
}

// Open reads the pclntab of f, whose bytes r reads (the *os.File f was
// opened from, so that the table is mapped rather than copied; any
// io.ReaderAt works). It returns an error wrapping ErrNotGo when f has
// none. The caller must read the Table's file under process.Guard if r is
// a file that could be truncated.
func Open(f *elf.File, r io.ReaderAt) (*Table, error) {
	return openELF(f, r, true)
}

// OpenFuncs reads the pclntab of f for its functions and SP deltas
// (Funcs, AppendSP) only: the inline trees Resolve expands are not read.
// r is as for Open; nil copies the section through f.
func OpenFuncs(f *elf.File, r io.ReaderAt) (*Table, error) {
	return openELF(f, r, false)
}

func openELF(f *elf.File, r io.ReaderAt, inline bool) (*Table, error) {
	s := f.Section(".gopclntab")
	if s == nil {
		return nil, ErrNotGo
	}
	if s.Type == elf.SHT_NOBITS || s.Size > maxPclntab {
		return nil, fmt.Errorf("gopclntab: section %s of %d bytes is empty or over the %d byte limit", s.Name, s.Size, maxPclntab)
	}
	reg, err := mapped.Section(r, s, maxPclntab)
	if err != nil {
		return nil, fmt.Errorf("gopclntab: %w", err)
	}
	var textStart uint64
	if text := f.Section(".text"); text != nil {
		textStart = text.Addr
	}
	gofuncAddr, haveGofunc := uint64(0), false
	if v, ok := symbolValue(f, r, "runtime.text"); ok {
		textStart = v
	}
	if v, ok := symbolValue(f, r, "go:func.*", "go.func.*"); ok {
		gofuncAddr, haveGofunc = v, true
	}
	if !haveGofunc {
		if md, ok := findModuledata(f, s.Addr); ok {
			textStart, gofuncAddr, haveGofunc = md.text, md.gofunc, true
		}
	}
	t, err := Parse(reg.Bytes(), textStart, f.ByteOrder)
	if err != nil {
		reg.Close()
		return nil, err
	}
	if t.old != nil && t.functab == nil {
		// debug/gosym copies what it keeps.
		reg.Close()
		return t, nil
	}
	t.mapped = reg.Mapped()
	mapped.Attach(t, reg)
	if haveGofunc && inline && r != nil {
		if g := readRegion(f, r, gofuncAddr); g != nil {
			t.gofunc = g.Bytes()
			t.mapped = t.mapped || g.Mapped()
			mapped.Attach(t, g)
		}
	}
	return t, nil
}

// symbolValue returns the value of the first symbol of .symtab named one
// of names, scanning the table in place (no symbol slice is built).
func symbolValue(f *elf.File, r io.ReaderAt, names ...string) (uint64, bool) {
	if f.Class != elf.ELFCLASS64 {
		syms, err := f.Symbols()
		if err != nil {
			return 0, false
		}
		for _, sym := range syms {
			for _, n := range names {
				if sym.Name == n {
					return sym.Value, true
				}
			}
		}
		return 0, false
	}
	s := f.SectionByType(elf.SHT_SYMTAB)
	if s == nil || s.Link == 0 || int(s.Link) >= len(f.Sections) {
		return 0, false
	}
	symReg, err := mapped.Section(r, s, maxPclntab)
	if err != nil {
		return 0, false
	}
	defer symReg.Close()
	strReg, err := mapped.Section(r, f.Sections[s.Link], maxPclntab)
	if err != nil {
		return 0, false
	}
	defer strReg.Close()
	syms, strs := symReg.Bytes(), strReg.Bytes()
	for off := 24; off+24 <= len(syms); off += 24 {
		name := cstring(strs, uint64(f.ByteOrder.Uint32(syms[off:])))
		for _, n := range names {
			if len(name) == len(n) && string(name) == n {
				return f.ByteOrder.Uint64(syms[off+8:]), true
			}
		}
	}
	return 0, false
}

// readRegion returns the bytes from the virtual address addr to the end
// of the section holding it.
func readRegion(f *elf.File, r io.ReaderAt, addr uint64) *mapped.Region {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_ALLOC == 0 || addr < s.Addr || addr >= s.Addr+s.Size {
			continue
		}
		if s.Flags&elf.SHF_COMPRESSED != 0 || s.FileSize != s.Size {
			return nil
		}
		reg, err := mapped.ReadAt(r, s.Offset+(addr-s.Addr), s.Addr+s.Size-addr, maxPclntab)
		if err != nil {
			return nil
		}
		return reg
	}
	return nil
}

type moduledata struct{ text, gofunc uint64 }

// findModuledata finds runtime.firstmoduledata in a stripped binary: it is
// the pointer-aligned word in a data section (.go.module since Go 1.26) equal to the address of the
// pclntab (its first field, pcHeader), and yields moduledata.text and
// moduledata.gofunc at their Go 1.20+ offsets.
func findModuledata(f *elf.File, pclntabAddr uint64) (moduledata, bool) {
	if f.Class != elf.ELFCLASS64 {
		return moduledata{}, false
	}
	const (
		textOff   = 22 * 8 // after pcHeader, 6 slices, findfunctab, minpc, maxpc
		gofuncOff = 40 * 8
	)
	// go:func.* is read-only data: in .rodata, or inside .gopclntab
	// since Go 1.26.
	readOnly := func(addr uint64) bool {
		for _, s := range f.Sections {
			if s.Flags&(elf.SHF_ALLOC|elf.SHF_WRITE|elf.SHF_EXECINSTR) == elf.SHF_ALLOC &&
				s.Type != elf.SHT_NOBITS && addr >= s.Addr && addr < s.Addr+s.Size {
				return true
			}
		}
		return false
	}
	for _, name := range []string{".go.module", ".noptrdata", ".data.rel.ro", ".data"} {
		s := f.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS || s.Size > maxPclntab {
			continue
		}
		const chunk = 1 << 20
		buf := make([]byte, chunk+gofuncOff+8)
		for off := uint64(0); off < s.Size; off += chunk {
			n, _ := s.ReadAt(buf, int64(off))
			for i := 0; i+gofuncOff+8 <= n && i < chunk; i += 8 {
				if f.ByteOrder.Uint64(buf[i:]) != pclntabAddr {
					continue
				}
				md := moduledata{text: f.ByteOrder.Uint64(buf[i+textOff:]), gofunc: f.ByteOrder.Uint64(buf[i+gofuncOff:])}
				if text := f.Section(".text"); text != nil && (md.text < text.Addr || md.text >= text.Addr+text.Size) {
					continue
				}
				if !readOnly(md.gofunc) {
					continue
				}
				return md, true
			}
		}
	}
	return moduledata{}, false
}

// Parse reads a pclntab. textStart is the address of runtime.text; Go
// 1.18+ tables store function entries relative to it.
func Parse(data []byte, textStart uint64, bo binary.ByteOrder) (*Table, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("gopclntab: %d byte table is too short", len(data))
	}
	magic := bo.Uint32(data)
	switch magic {
	case 0xfffffff0, 0xfffffff1:
	case 0xfffffffa, 0xfffffffb:
		return parseOld(data, textStart, bo)
	default:
		return nil, fmt.Errorf("gopclntab: unknown magic %#x", magic)
	}
	t := &Table{bo: bo, go120: magic == 0xfffffff1, textStart: textStart}
	t.quantum = uint64(data[6])
	t.ptrSize = int(data[7])
	if t.ptrSize != 4 && t.ptrSize != 8 || t.quantum == 0 {
		return nil, fmt.Errorf("gopclntab: bad header: pointer size %d, pc quantum %d", t.ptrSize, t.quantum)
	}
	word := func(i int) (uint64, error) {
		off := 8 + i*t.ptrSize
		if off+t.ptrSize > len(data) {
			return 0, fmt.Errorf("gopclntab: header word %d past the %d byte table", i, len(data))
		}
		if t.ptrSize == 4 {
			return uint64(bo.Uint32(data[off:])), nil
		}
		return bo.Uint64(data[off:]), nil
	}
	var hdr [8]uint64 // nfunc, nfiles, textStart, funcname, cu, filetab, pctab, pcln
	for i := range hdr {
		v, err := word(i)
		if err != nil {
			return nil, err
		}
		hdr[i] = v
	}
	sub := func(what string, off uint64, end uint64) ([]byte, error) {
		if off > end || end > uint64(len(data)) {
			return nil, fmt.Errorf("gopclntab: %s at [%#x,%#x) is outside the %d byte table", what, off, end, len(data))
		}
		return data[off:end], nil
	}
	// The tables are laid out in header order; each ends where the next
	// begins.
	var err error
	var funcnames, files []byte
	if funcnames, err = sub("funcnametab", hdr[3], hdr[4]); err != nil {
		return nil, err
	}
	if t.cutab, err = sub("cutab", hdr[4], hdr[5]); err != nil {
		return nil, err
	}
	if files, err = sub("filetab", hdr[5], hdr[6]); err != nil {
		return nil, err
	}
	t.pctabOff = hdr[6]
	if t.pctab, err = sub("pctab", hdr[6], hdr[7]); err != nil {
		return nil, err
	}
	if t.pcln, err = sub("pclntable", hdr[7], uint64(len(data))); err != nil {
		return nil, err
	}
	if hdr[0] > uint64(len(t.pcln)) || (hdr[0]*2+1)*4 > uint64(len(t.pcln)) {
		return nil, fmt.Errorf("gopclntab: %d functions do not fit the %d byte function table", hdr[0], len(t.pcln))
	}
	t.nfunc = int(hdr[0])
	t.functab = t.pcln[:(t.nfunc*2+1)*4]
	t.funcnames, t.files = funcnames, files
	t.pclnOff = hdr[7]
	return t, nil
}

func parseOld(data []byte, textStart uint64, bo binary.ByteOrder) (*Table, error) {
	// debug/gosym sizes its tables by the header's function count: check
	// it against the bytes present before handing it hostile data.
	ptrSize := int(data[7])
	if ptrSize != 4 && ptrSize != 8 || data[6] == 0 || len(data) < 8+ptrSize {
		return nil, fmt.Errorf("gopclntab: bad header: pointer size %d, pc quantum %d", ptrSize, data[6])
	}
	nfunc := uint64(bo.Uint32(data[8:]))
	if ptrSize == 8 {
		nfunc = bo.Uint64(data[8:])
	}
	if nfunc > uint64(len(data))/uint64(2*ptrSize) {
		return nil, fmt.Errorf("gopclntab: %d functions do not fit the %d byte table", nfunc, len(data))
	}
	lt := gosym.NewLineTable(data, textStart)
	tab, err := gosym.NewTable(nil, lt)
	if err != nil {
		return nil, fmt.Errorf("gopclntab: %w", err)
	}
	t := &Table{old: tab, bo: bo, ptrSize: ptrSize, quantum: uint64(data[6])}
	if bo.Uint32(data) == 0xfffffffa {
		// Go 1.16 and 1.17: what Funcs and AppendSP read.
		if err := t.parse116(data); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Size estimates the memory the table holds. Mapped bytes count for a
// sixteenth: they are page cache, resident only where lookups touched them
// and reclaimable, but they still occupy address space and page tables.
func (t *Table) Size() int64 {
	if t.old != nil {
		return int64(len(t.old.Funcs)) * 256
	}
	n := int64(len(t.funcnames) + len(t.files) + len(t.cutab) + len(t.pctab) + len(t.pcln) + len(t.gofunc))
	if t.mapped {
		n /= 16
	}
	return n + 256
}

// HasInlining reports whether inlined frames can be expanded.
func (t *Table) HasInlining() bool { return t.gofunc != nil }

// fn is a decoded _func record.
type fn struct {
	entry                    uint64
	nameOff                  uint32
	pcfile, pcln, cuOffset   uint32
	startLine                int64
	inlIndexTab, inlTreeData uint32 // pctab offset; gofunc offset or ^0
}

// findFunc returns the function containing pc.
func (t *Table) findFunc(pc uint64) (fn, bool) {
	if pc < t.textStart || t.nfunc == 0 {
		return fn{}, false
	}
	off := pc - t.textStart
	entryAt := func(i int) uint64 { return uint64(t.bo.Uint32(t.functab[i*8:])) }
	if off >= entryAt(t.nfunc) {
		return fn{}, false
	}
	lo, hi := 0, t.nfunc // last i with entryAt(i) <= off
	for lo < hi {
		m := int(uint(lo+hi+1) / 2)
		if m < t.nfunc && entryAt(m) <= off {
			lo = m
		} else {
			hi = m - 1
		}
	}
	if entryAt(lo) > off {
		return fn{}, false
	}
	funcOff := uint64(t.bo.Uint32(t.functab[lo*8+4:]))
	rec := t.pcln
	hdrLen := uint64(44)
	if !t.go120 {
		hdrLen = 40
	}
	if funcOff+hdrLen > uint64(len(rec)) {
		return fn{}, false
	}
	r := rec[funcOff:]
	u32 := func(i uint64) uint32 { return t.bo.Uint32(r[i:]) }
	f := fn{
		entry:       t.textStart + uint64(u32(0)),
		nameOff:     u32(4),
		pcfile:      u32(20),
		pcln:        u32(24),
		cuOffset:    u32(32),
		inlTreeData: ^uint32(0),
	}
	npcdata := uint64(u32(28))
	nfuncdata := uint64(r[hdrLen-1])
	if t.go120 {
		f.startLine = int64(int32(u32(36)))
	}
	if hdrLen+4*(npcdata+nfuncdata) > uint64(len(r)) {
		return fn{}, false
	}
	const pcdataInlTreeIndex, funcdataInlTree = 2, 3
	if npcdata > pcdataInlTreeIndex {
		f.inlIndexTab = u32(hdrLen + 4*pcdataInlTreeIndex)
	}
	if nfuncdata > funcdataInlTree {
		f.inlTreeData = u32(hdrLen + 4*npcdata + 4*funcdataInlTree)
	}
	return f, true
}

// pcvalue decodes the pc-value table at off for the function starting at
// entry and returns the value at target, or -1.
func (t *Table) pcvalue(off uint32, entry, target uint64) int32 {
	if off == 0 || uint64(off) >= uint64(len(t.pctab)) {
		return -1
	}
	p := t.pctab[off:]
	pc, val := entry, int32(-1)
	for first := true; ; first = false {
		uv, n := binary.Uvarint(p)
		if n <= 0 || (uv == 0 && !first) || uv > 1<<32-1 {
			return -1
		}
		p = p[n:]
		v := uint32(uv)
		val += int32(-(v & 1) ^ (v >> 1))
		pcd, n := binary.Uvarint(p)
		if n <= 0 || pcd > 1<<32-1 {
			return -1
		}
		p = p[n:]
		pc += pcd * t.quantum
		if target < pc {
			return val
		}
	}
}

func (t *Table) funcName(off uint32) string {
	return string(cstring(t.funcnames, uint64(off)))
}

// cstring returns the NUL-terminated bytes at off (not copied).
func cstring(b []byte, off uint64) []byte {
	if off >= uint64(len(b)) {
		return nil
	}
	b = b[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func (t *Table) fileLine(f *fn, pc uint64) (string, int64) {
	line := t.pcvalue(f.pcln, f.entry, pc)
	fileno := t.pcvalue(f.pcfile, f.entry, pc)
	file := ""
	if fileno >= 0 {
		i := (uint64(f.cuOffset) + uint64(fileno)) * 4
		if i+4 <= uint64(len(t.cutab)) {
			if off := t.bo.Uint32(t.cutab[i:]); off != ^uint32(0) {
				file = string(cstring(t.files, uint64(off)))
			}
		}
	}
	return file, int64(line)
}

// maxInlineDepth bounds inline chains, which a crafted table could make
// cyclic.
const maxInlineDepth = 64

// Resolve appends the frames at pc to buf, innermost (most inlined) first,
// and returns it; nothing is appended when pc is in no function.
func (t *Table) Resolve(pc uint64, buf []Frame) []Frame {
	defer runtime.KeepAlive(t) // the mapped bytes live as long as t
	if t.old != nil {
		file, line, f := t.old.PCToLine(pc)
		if f == nil {
			return buf
		}
		return append(buf, Frame{Function: f.Name, File: file, Line: int64(line)})
	}
	f, ok := t.findFunc(pc)
	if !ok {
		return buf
	}
	ix := int32(-1)
	var tree []byte
	if t.gofunc != nil && f.inlTreeData != ^uint32(0) && uint64(f.inlTreeData) < uint64(len(t.gofunc)) {
		tree = t.gofunc[f.inlTreeData:]
		ix = t.pcvalue(f.inlIndexTab, f.entry, pc)
	}
	for depth := 0; ix >= 0 && depth < maxInlineDepth; depth++ {
		// inlinedCall: funcID u8, pad [3]u8, nameOff i32, parentPc i32, startLine i32.
		rec := uint64(ix) * 16
		if rec+16 > uint64(len(tree)) {
			break
		}
		file, line := t.fileLine(&f, pc)
		buf = append(buf, Frame{
			Function:  t.funcName(t.bo.Uint32(tree[rec+4:])),
			File:      file,
			Line:      line,
			StartLine: int64(int32(t.bo.Uint32(tree[rec+12:]))),
		})
		pc = f.entry + uint64(int64(int32(t.bo.Uint32(tree[rec+8:]))))
		ix = t.pcvalue(f.inlIndexTab, f.entry, pc)
	}
	file, line := t.fileLine(&f, pc)
	return append(buf, Frame{Function: t.funcName(f.nameOff), File: file, Line: line, StartLine: f.startLine})
}
