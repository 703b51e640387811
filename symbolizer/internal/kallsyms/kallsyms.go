// Package kallsyms reads the kernel's symbol table as /proc/kallsyms prints
// it, one symbol per line:
//
//	ffffffff81000000 T _stext
//	ffffffffc0a01000 t ext4_fill_super	[ext4]
//
// Symbols of loadable modules carry the module name in brackets. The file
// has no sizes: an address belongs to the closest text symbol at or below
// it, within the kernel image or the module it falls in.
package kallsyms

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Symbol is one kernel text symbol.
type Symbol struct {
	Addr   uint64
	Name   string
	Module string // "" for the kernel image
}

// Module is the address range of a loaded module or of the kernel image.
type Module struct {
	Name        string // "" for the kernel image
	Start, End  uint64 // [Start, End); an End of math.MaxUint64 reaches the top
	first, last int    // index range of its symbols in Table.syms
}

// Table is the kernel's text symbols, sorted by address. A kernel has
// 100,000 or more of them: each is 16 bytes here, its name a slice of one
// string holding them all, rather than a Symbol with its own strings.
type Table struct {
	syms    []entry
	names   string   // every name, back to back
	mods    []string // module names, indexed by entry.mod
	modules []Module // sorted by Start; modules[0] may be the kernel
}

// entry is one symbol: names[name:name+nameLen], module mods[mod].
type entry struct {
	addr    uint64
	name    uint32
	nameLen uint16
	mod     uint16
}

func (t *Table) symbol(i int) Symbol {
	e := &t.syms[i]
	return Symbol{Addr: e.addr, Name: t.names[e.name : e.name+uint32(e.nameLen)], Module: t.mods[e.mod]}
}

// maxName bounds symbol and module names (the kernel's KSYM_NAME_LEN is
// 512).
const maxName = 4096

// builder accumulates symbols for a Table.
type builder struct {
	syms  []entry
	names []byte
	mods  []string
	modIx map[string]uint16
}

func (b *builder) add(addr uint64, name, mod []byte) error {
	if len(name) > 1<<16-1 {
		return fmt.Errorf("kallsyms: %d byte symbol name", len(name))
	}
	if len(b.names)+len(name) > 1<<32-1 {
		return fmt.Errorf("kallsyms: more than 4 GiB of names")
	}
	m, ok := b.modIx[string(mod)]
	if !ok {
		if len(b.mods) >= 1<<16-1 {
			return fmt.Errorf("kallsyms: more than %d modules", 1<<16-1)
		}
		if b.modIx == nil {
			b.modIx = map[string]uint16{}
		}
		m = uint16(len(b.mods))
		b.mods = append(b.mods, string(mod))
		b.modIx[string(mod)] = m
	}
	b.syms = append(b.syms, entry{addr: addr, name: uint32(len(b.names)), nameLen: uint16(len(name)), mod: m})
	b.names = append(b.names, name...)
	return nil
}

// ParseLine parses one line of /proc/kallsyms. ok is false for symbols
// that are not code (data, absolute, ...), which are skipped.
func ParseLine(line string) (s Symbol, ok bool, err error) {
	a, name, mod, ok, err := parseLine([]byte(line))
	if err != nil || !ok {
		return s, ok, err
	}
	return Symbol{Addr: a, Name: string(name), Module: string(mod)}, true, nil
}

// parseLine is ParseLine without allocating: name and mod alias line.
func parseLine(line []byte) (addr uint64, name, mod []byte, ok bool, err error) {
	a, rest, found := bytes.Cut(line, []byte(" "))
	if !found {
		return 0, nil, nil, false, fmt.Errorf("kallsyms: no fields in %q", line)
	}
	typ, rest, found := bytes.Cut(rest, []byte(" "))
	if !found || len(typ) != 1 {
		return 0, nil, nil, false, fmt.Errorf("kallsyms: bad type in %q", line)
	}
	if len(a) == 0 || len(a) > 16 {
		return 0, nil, nil, false, fmt.Errorf("kallsyms: bad address in %q", line)
	}
	for _, c := range a {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, nil, nil, false, fmt.Errorf("kallsyms: bad address in %q", line)
		}
		addr = addr<<4 | uint64(d)
	}
	name, mod, hasMod := bytes.Cut(rest, []byte("\t"))
	if hasMod {
		m, opened := bytes.CutPrefix(mod, []byte("["))
		m, closed := bytes.CutSuffix(m, []byte("]"))
		if !opened || !closed || len(m) == 0 {
			return 0, nil, nil, false, fmt.Errorf("kallsyms: bad module %q in %q", mod, line)
		}
		mod = m
	}
	if len(name) == 0 {
		return 0, nil, nil, false, fmt.Errorf("kallsyms: no name in %q", line)
	}
	if len(name) > maxName || len(mod) > maxName {
		return 0, nil, nil, false, fmt.Errorf("kallsyms: name of more than %d bytes in %.80q (cut)", maxName, line)
	}
	switch typ[0] {
	case 't', 'T', 'w', 'W':
	default:
		return 0, nil, nil, false, nil
	}
	return addr, name, mod, true, nil
}

// Parse reads /proc/kallsyms. modRanges, when known (from /proc/modules),
// gives each module's [start, end) so that addresses past a module's last
// symbol are not attributed to it; a nil map falls back to the symbols.
// All-zero addresses (kptr_restrict) yield an error.
func Parse(r io.Reader, modRanges map[string][2]uint64) (*Table, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	var b builder
	nonzero := false
	for n := 1; sc.Scan(); n++ {
		addr, name, mod, ok, err := parseLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if !ok {
			continue
		}
		nonzero = nonzero || addr != 0
		if err := b.add(addr, name, mod); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	if !nonzero {
		return nil, fmt.Errorf("kallsyms: all addresses are zero (kptr_restrict, or not root)")
	}
	return b.build(modRanges), nil
}

// build makes a Table of syms (for tests); symbols ParseLine would
// refuse are dropped.
func build(syms []Symbol, modRanges map[string][2]uint64) *Table {
	var b builder
	for _, s := range syms {
		if len(s.Name) <= maxName && len(s.Module) <= maxName {
			_ = b.add(s.Addr, []byte(s.Name), []byte(s.Module)) // only fails past 4 GiB or 65535 modules
		}
	}
	return b.build(modRanges)
}

func (b *builder) build(modRanges map[string][2]uint64) *Table {
	syms := slices.Clip(b.syms)
	if cap(b.syms) > len(b.syms)+len(b.syms)/8 {
		syms = slices.Clone(b.syms) // drop append's slack
	}
	slices.SortStableFunc(syms, func(a, b entry) int { return cmp.Compare(a.addr, b.addr) })
	t := &Table{syms: syms, names: string(b.names), mods: b.mods}
	if len(t.mods) == 0 {
		t.mods = []string{""}
	}
	// Group contiguous runs of one module (the kernel image is "").
	for i := 0; i < len(syms); {
		j := i + 1
		for j < len(syms) && syms[j].mod == syms[i].mod {
			j++
		}
		m := Module{Name: t.mods[syms[i].mod], Start: syms[i].addr, first: i, last: j - 1}
		m.End = satAdd(syms[j-1].addr, 1)
		if r, ok := modRanges[m.Name]; ok && m.Name != "" && r[1] > r[0] {
			m.Start, m.End = min(m.Start, r[0]), max(m.End, r[1])
		} else if m.Name != "" {
			m.End = satAdd(syms[j-1].addr, 4096) // no size known: one page past the last symbol
		} else {
			// The kernel image ends at _etext for code.
			for k := i; k < j; k++ {
				if t.symbol(k).Name == "_etext" {
					m.End = max(m.End, syms[k].addr)
				}
			}
		}
		if j < len(syms) {
			m.End = min(m.End, syms[j].addr)
		}
		if len(t.modules) > 0 && t.modules[len(t.modules)-1].Name == m.Name {
			// Same module in two runs (interleaved): widen the previous one.
			prev := &t.modules[len(t.modules)-1]
			prev.End, prev.last = m.End, m.last
		} else {
			t.modules = append(t.modules, m)
		}
		i = j
	}
	return t
}

// satAdd is a+b, or the top of the address space where that wraps: a
// symbol in the last page must not get an empty range. An End of
// math.MaxUint64 takes in the last address too.
func satAdd(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// Lookup returns the symbol containing addr and the index in Modules of
// the range it is in (-1 for none).
func (t *Table) Lookup(addr uint64) (Symbol, int, bool) {
	mi, found := slices.BinarySearchFunc(t.modules, addr, func(m Module, a uint64) int { return cmp.Compare(m.Start, a) })
	if !found {
		mi--
	}
	if mi < 0 || (addr >= t.modules[mi].End && t.modules[mi].End != math.MaxUint64) {
		return Symbol{}, -1, false
	}
	m := &t.modules[mi]
	i, found := slices.BinarySearchFunc(t.syms[m.first:m.last+1], addr, func(s entry, a uint64) int { return cmp.Compare(s.addr, a) })
	if !found {
		i--
	}
	if i < 0 {
		return Symbol{}, mi, false
	}
	// Several symbols may share the address; BinarySearch finds the first.
	return t.symbol(m.first + i), mi, true
}

// Modules returns the address ranges, the kernel image's named "".
func (t *Table) Modules() []Module { return t.modules }

// Len returns the number of symbols.
func (t *Table) Len() int { return len(t.syms) }

// Size estimates the bytes the table holds.
func (t *Table) Size() int64 {
	return int64(len(t.syms))*16 + int64(len(t.names)) + int64(len(t.modules))*64 + 64
}

// ParseModules reads /proc/modules ("name size refs deps state address")
// into module address ranges.
func ParseModules(r io.Reader) (map[string][2]uint64, error) {
	out := make(map[string][2]uint64)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			return nil, fmt.Errorf("kallsyms: short /proc/modules line %q", sc.Text())
		}
		size, err1 := strconv.ParseUint(f[1], 10, 64)
		addr, err2 := strconv.ParseUint(strings.TrimPrefix(f[5], "0x"), 16, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("kallsyms: bad /proc/modules line %q", sc.Text())
		}
		out[f[0]] = [2]uint64{addr, addr + size}
	}
	return out, sc.Err()
}
