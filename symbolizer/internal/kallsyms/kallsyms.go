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
	"cmp"
	"fmt"
	"io"
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
	Start, End  uint64 // [Start, End)
	first, last int    // index range of its symbols in Table.syms
}

// Table is the kernel's text symbols, sorted by address.
type Table struct {
	syms    []Symbol
	modules []Module // sorted by Start; modules[0] may be the kernel
}

// ParseLine parses one line of /proc/kallsyms. ok is false for symbols
// that are not code (data, absolute, ...), which are skipped.
func ParseLine(line string) (s Symbol, ok bool, err error) {
	addr, rest, found := strings.Cut(line, " ")
	if !found {
		return s, false, fmt.Errorf("kallsyms: no fields in %q", line)
	}
	typ, rest, found := strings.Cut(rest, " ")
	if !found || len(typ) != 1 {
		return s, false, fmt.Errorf("kallsyms: bad type in %q", line)
	}
	if len(addr) == 0 || len(addr) > 16 {
		return s, false, fmt.Errorf("kallsyms: bad address in %q", line)
	}
	a, err := strconv.ParseUint(addr, 16, 64)
	if err != nil {
		return s, false, fmt.Errorf("kallsyms: bad address in %q", line)
	}
	name, mod, hasMod := strings.Cut(rest, "\t")
	if hasMod {
		m, found := strings.CutPrefix(mod, "[")
		if m, found = strings.CutSuffix(m, "]"); !found || m == "" {
			return s, false, fmt.Errorf("kallsyms: bad module %q in %q", mod, line)
		}
		mod = m
	}
	if name == "" {
		return s, false, fmt.Errorf("kallsyms: no name in %q", line)
	}
	switch typ[0] {
	case 't', 'T', 'w', 'W':
	default:
		return s, false, nil
	}
	return Symbol{Addr: a, Name: name, Module: mod}, true, nil
}

// Parse reads /proc/kallsyms. modRanges, when known (from /proc/modules),
// gives each module's [start, end) so that addresses past a module's last
// symbol are not attributed to it; a nil map falls back to the symbols.
// All-zero addresses (kptr_restrict) yield an error.
func Parse(r io.Reader, modRanges map[string][2]uint64) (*Table, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	var syms []Symbol
	nonzero := false
	for n := 1; sc.Scan(); n++ {
		s, ok, err := ParseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if !ok {
			continue
		}
		nonzero = nonzero || s.Addr != 0
		syms = append(syms, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	if !nonzero {
		return nil, fmt.Errorf("kallsyms: all addresses are zero (kptr_restrict, or not root)")
	}
	return build(syms, modRanges), nil
}

func build(syms []Symbol, modRanges map[string][2]uint64) *Table {
	slices.SortStableFunc(syms, func(a, b Symbol) int { return cmp.Compare(a.Addr, b.Addr) })
	t := &Table{syms: syms}
	// Group contiguous runs of one module (the kernel image is "").
	for i := 0; i < len(syms); {
		j := i + 1
		for j < len(syms) && syms[j].Module == syms[i].Module {
			j++
		}
		m := Module{Name: syms[i].Module, Start: syms[i].Addr, first: i, last: j - 1}
		m.End = syms[j-1].Addr + 1
		if r, ok := modRanges[m.Name]; ok && m.Name != "" && r[1] > r[0] {
			m.Start, m.End = min(m.Start, r[0]), max(m.End, r[1])
		} else if m.Name != "" {
			m.End = syms[j-1].Addr + 4096 // no size known: one page past the last symbol
		} else {
			// The kernel image ends at _etext for code.
			for k := i; k < j; k++ {
				if syms[k].Name == "_etext" {
					m.End = max(m.End, syms[k].Addr)
				}
			}
		}
		if j < len(syms) {
			m.End = min(m.End, syms[j].Addr)
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

// Lookup returns the symbol containing addr and the index in Modules of
// the range it is in (-1 for none).
func (t *Table) Lookup(addr uint64) (Symbol, int, bool) {
	mi, found := slices.BinarySearchFunc(t.modules, addr, func(m Module, a uint64) int { return cmp.Compare(m.Start, a) })
	if !found {
		mi--
	}
	if mi < 0 || addr >= t.modules[mi].End {
		return Symbol{}, -1, false
	}
	m := &t.modules[mi]
	i, found := slices.BinarySearchFunc(t.syms[m.first:m.last+1], addr, func(s Symbol, a uint64) int { return cmp.Compare(s.Addr, a) })
	if !found {
		i--
	}
	if i < 0 {
		return Symbol{}, mi, false
	}
	// Several symbols may share the address; BinarySearch finds the first.
	return t.syms[m.first+i], mi, true
}

// Modules returns the address ranges, the kernel image's named "".
func (t *Table) Modules() []Module { return t.modules }

// Len returns the number of symbols.
func (t *Table) Len() int { return len(t.syms) }

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
