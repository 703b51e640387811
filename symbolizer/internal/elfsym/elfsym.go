// Package elfsym names addresses of one ELF file with its symbol tables
// (.symtab, else .dynsym), the way addr2line does when a file has no debug
// information, and reads section contents with a size cap. Build ids are
// internal/process's.
//
// A Table is built once per file and is read-only afterwards, so it is safe
// for concurrent use. Lookups binary-search a sorted slice and allocate
// nothing: names live in one string, symbols hold offsets into it.
package elfsym

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/scorch-profiler/scorch/internal/mapped"
)

// MaxSection bounds the size of one section this package reads into memory,
// so that a crafted file cannot make us allocate gigabytes.
const MaxSection = 512 << 20

// ErrNoSymbols is returned by New when a file has no function symbols.
var ErrNoSymbols = errors.New("elfsym: no function symbols")

// ReadSection returns the contents of s, refusing sections larger than max
// bytes (after decompression) or lying outside the file.
func ReadSection(s *elf.Section, max int64) ([]byte, error) {
	if s.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("elfsym: section %s has no data", s.Name)
	}
	if s.Size > uint64(max) || s.FileSize > uint64(max) {
		return nil, fmt.Errorf("elfsym: section %s is %d bytes, more than the %d byte limit", s.Name, s.Size, max)
	}
	data := make([]byte, s.Size)
	n, err := io.ReadFull(s.Open(), data)
	if err != nil {
		return nil, fmt.Errorf("elfsym: reading section %s: %d of %d bytes: %w", s.Name, n, s.Size, err)
	}
	return data, nil
}

// Table is the function symbols of one file, sorted by address.
type Table struct {
	syms  []sym
	names string // all names, back to back
	// Dynamic reports that the table came from .dynsym (the file has no
	// .symtab): addresses between exported functions then belong to
	// unnamed local functions and are not attributed to the previous one.
	Dynamic bool
}

type sym struct {
	addr, end uint64 // [addr, end) is attributed to this symbol
	name      uint32 // offset in Table.names
	nameLen   uint32
}

// New reads the function symbols of f from .symtab, or from .dynsym when
// there is no .symtab.
func New(f *elf.File) (*Table, error) { return NewFrom(f, nil) }

// NewFrom is New reading the sections from r, the file f was opened from:
// when r is an *os.File the symbol and string tables are mapped while the
// table is built rather than copied into memory (the Table keeps only the
// function symbols). A nil r reads through f.
func NewFrom(f *elf.File, r io.ReaderAt) (*Table, error) {
	for _, typ := range []elf.SectionType{elf.SHT_SYMTAB, elf.SHT_DYNSYM} {
		var s *elf.Section
		for _, sec := range f.Sections {
			if sec.Type == typ {
				s = sec
				break
			}
		}
		if s == nil {
			continue
		}
		t, err := fromSection(f, r, s)
		if err != nil {
			return nil, err
		}
		if len(t.syms) > 0 {
			t.Dynamic = typ == elf.SHT_DYNSYM
			return t, nil
		}
	}
	return nil, ErrNoSymbols
}

func fromSection(f *elf.File, r io.ReaderAt, s *elf.Section) (t *Table, err error) {
	if s.Link == 0 || int(s.Link) >= len(f.Sections) {
		return nil, fmt.Errorf("elfsym: %s links to string table %d of %d sections", s.Name, s.Link, len(f.Sections))
	}
	var symData, strData []byte
	if r == nil {
		if symData, err = ReadSection(s, MaxSection); err != nil {
			return nil, err
		}
		if strData, err = ReadSection(f.Sections[s.Link], MaxSection); err != nil {
			return nil, err
		}
	} else {
		// Parse copies the names it keeps: the regions can go after it.
		symReg, err := mapped.Section(r, s, MaxSection)
		if err != nil {
			return nil, fmt.Errorf("elfsym: %w", err)
		}
		defer symReg.Close()
		strReg, err := mapped.Section(r, f.Sections[s.Link], MaxSection)
		if err != nil {
			return nil, fmt.Errorf("elfsym: %w", err)
		}
		defer strReg.Close()
		symData, strData = symReg.Bytes(), strReg.Bytes()
	}
	secs := make([]Section, len(f.Sections))
	for i, sec := range f.Sections {
		secs[i] = Section{Addr: sec.Addr, Size: sec.Size, Exec: sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Flags&elf.SHF_ALLOC != 0}
	}
	return Parse(symData, strData, f.Class, f.ByteOrder, secs, s.Type == elf.SHT_DYNSYM)
}

// Section describes one section header for Parse: symbols are kept only when
// they point into an executable section.
type Section struct {
	Addr, Size uint64
	Exec       bool
}

// Parse builds a table from the raw contents of a symbol table section and
// its string table. It is the part of New that reads untrusted bytes.
func Parse(symData, strData []byte, class elf.Class, bo binary.ByteOrder, secs []Section, dynamic bool) (*Table, error) {
	entSize := 24
	if class == elf.ELFCLASS32 {
		entSize = 16
	} else if class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("elfsym: unknown ELF class %v", class)
	}
	type raw struct {
		addr, size uint64
		name       string
		shndx      uint16
		rank       int
	}
	var syms []raw
	nameBytes := 0
	for off := entSize; off+entSize <= len(symData); off += entSize { // entry 0 is reserved
		e := symData[off : off+entSize]
		var nameOff uint32
		var value, size uint64
		var info, other uint8
		var shndx uint16
		if entSize == 24 {
			nameOff, info, other, shndx = bo.Uint32(e), e[4], e[5], bo.Uint16(e[6:])
			value, size = bo.Uint64(e[8:]), bo.Uint64(e[16:])
		} else {
			nameOff, value, size = bo.Uint32(e), uint64(bo.Uint32(e[4:])), uint64(bo.Uint32(e[8:]))
			info, other, shndx = e[12], e[13], bo.Uint16(e[14:])
		}
		_ = other
		typ := elf.SymType(info & 0xf)
		switch typ {
		case elf.STT_FUNC, elf.STT_GNU_IFUNC, elf.STT_NOTYPE:
		default:
			continue
		}
		if shndx == uint16(elf.SHN_UNDEF) || int(shndx) >= len(secs) || !secs[shndx].Exec || value == 0 {
			continue
		}
		if sec := secs[shndx]; value < sec.Addr || value >= sec.Addr+sec.Size {
			continue
		}
		name := cstring(strData, nameOff)
		if name == "" || (typ == elf.STT_NOTYPE && (strings.HasPrefix(name, ".L") || strings.HasPrefix(name, "$"))) {
			continue
		}
		// Among aliases at one address (identical code folding, C
		// library aliases) pick as addr2line does: the largest, then the
		// first in the table.
		rank := len(syms)
		syms = append(syms, raw{value, size, name, shndx, rank})
	}
	slices.SortFunc(syms, func(a, b raw) int {
		if c := cmp.Compare(a.addr, b.addr); c != 0 {
			return c
		}
		if c := cmp.Compare(b.size, a.size); c != 0 {
			return c
		}
		return cmp.Compare(a.rank, b.rank)
	})
	syms = slices.CompactFunc(syms, func(a, b raw) bool { return a.addr == b.addr })
	for _, s := range syms {
		nameBytes += len(s.name)
	}
	if nameBytes > 1<<32-1 {
		return nil, fmt.Errorf("elfsym: %d bytes of names", nameBytes)
	}
	t := &Table{syms: make([]sym, len(syms)), Dynamic: dynamic}
	var names strings.Builder
	names.Grow(nameBytes)
	for i, s := range syms {
		sec := secs[s.shndx]
		end := s.addr + s.size
		if s.size == 0 || !dynamic {
			// As addr2line: an address past a symbol's size (alignment
			// padding, unsized assembly symbols) belongs to it up to the
			// next symbol or the end of the section. With only .dynsym,
			// gaps are unnamed local functions, so sizes are kept.
			next := sec.Addr + sec.Size
			if i+1 < len(syms) && syms[i+1].addr < next {
				next = syms[i+1].addr
			}
			end = max(end, next)
		}
		t.syms[i] = sym{addr: s.addr, end: end, name: uint32(names.Len()), nameLen: uint32(len(s.name))}
		names.WriteString(s.name)
	}
	t.names = names.String()
	return t, nil
}

func cstring(b []byte, off uint32) string {
	if uint64(off) >= uint64(len(b)) {
		return ""
	}
	b = b[off:]
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Lookup returns the function containing the ELF virtual address addr and
// its start address.
func (t *Table) Lookup(addr uint64) (name string, start uint64, ok bool) {
	i, found := slices.BinarySearchFunc(t.syms, addr, func(s sym, a uint64) int { return cmp.Compare(s.addr, a) })
	if !found {
		i--
	}
	if i < 0 {
		return "", 0, false
	}
	s := &t.syms[i]
	if addr >= s.end {
		return "", 0, false
	}
	return t.names[s.name : s.name+s.nameLen], s.addr, true
}

// Len returns the number of symbols.
func (t *Table) Len() int { return len(t.syms) }

// Size estimates the bytes the table holds.
func (t *Table) Size() int64 { return int64(len(t.syms))*24 + int64(len(t.names)) + 64 }

// Symbol returns the i'th symbol in address order, for tests and tools.
func (t *Table) Symbol(i int) (name string, start, end uint64) {
	s := &t.syms[i]
	return t.names[s.name : s.name+s.nameLen], s.addr, s.end
}
