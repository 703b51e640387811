package dwarfsym

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"sort"

	"github.com/ulikunitz/xz"
)

// symbol is a function of a names-only table.
type symbol struct {
	lo, hi uint64
	name   string
}

// openMiniDebugInfo returns a names-only Table from f's MiniDebugInfo
// (.gnu_debugdata: an xz-compressed ELF whose .symtab holds the functions
// .dynsym lacks) merged with f's .dynsym, or nil, nil when f has none.
func openMiniDebugInfo(f *elf.File, path string) (*Table, error) {
	s := f.Section(".gnu_debugdata")
	if s == nil || s.Type == elf.SHT_NOBITS {
		return nil, nil
	}
	if s.Size > maxMiniDebug {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata is %d bytes, more than %d", path, s.Size, maxMiniDebug)
	}
	zr, err := xz.NewReader(s.Open())
	if err != nil {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata: %w", path, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxMiniDebug+1))
	if err != nil {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata: %w", path, err)
	}
	if len(raw) > maxMiniDebug {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata decompresses to more than %d bytes", path, maxMiniDebug)
	}
	mf, err := elf.NewFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata: %w", path, err)
	}
	t := &Table{path: path, exec: execRanges(f)}
	var syms []symbol
	add := func(ss []elf.Symbol) error {
		for _, sym := range ss {
			if elf.ST_TYPE(sym.Info) != elf.STT_FUNC || sym.Section == elf.SHN_UNDEF || sym.Name == "" {
				continue
			}
			hi := sym.Value + sym.Size
			if sym.Size == 0 {
				hi = sym.Value + 1
			}
			if !t.validCode(sym.Value, hi) {
				continue
			}
			if len(syms) >= maxSymbols {
				return fmt.Errorf("dwarfsym: %s: more than %d symbols", path, maxSymbols)
			}
			syms = append(syms, symbol{lo: sym.Value, hi: hi, name: sym.Name})
		}
		return nil
	}
	mini, err := mf.Symbols()
	if err != nil {
		return nil, fmt.Errorf("dwarfsym: %s: .gnu_debugdata symbols: %w", path, err)
	}
	if err := add(mini); err != nil {
		return nil, err
	}
	if dyn, err := f.DynamicSymbols(); err == nil {
		if err := add(dyn); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(syms, func(i, j int) bool { return syms[i].lo < syms[j].lo })
	// Drop aliases (same start), keeping the first.
	out := syms[:0]
	for _, sym := range syms {
		if n := len(out); n > 0 && out[n-1].lo == sym.lo {
			continue
		}
		out = append(out, sym)
	}
	if out == nil {
		out = []symbol{}
	}
	t.syms = out
	var n int64
	for _, sym := range out {
		n += 40 + int64(len(sym.name))
	}
	t.size.Store(n)
	return t, nil
}

// resolveSym looks pc up in a names-only table.
func (t *Table) resolveSym(pc uint64) []Line {
	i := sort.Search(len(t.syms), func(i int) bool { return t.syms[i].lo > pc }) - 1
	if i < 0 || pc >= t.syms[i].hi {
		return nil
	}
	return []Line{{Function: t.syms[i].name}}
}
