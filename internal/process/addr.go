package process

import "debug/elf"

// Two conversions between run-time addresses and the ELF virtual addresses
// a file's symbol and unwind tables use. The kernel maps each PT_LOAD
// segment p at a page boundary: the mapping's file offset is p.Off rounded
// down to a page, and a byte at file offset off of the segment is at
// off - p.Off + p.Vaddr in the file's address space. A mapping may cover
// part of a page belonging to the segment before (linkers pack segments
// into shared file pages), and a process may map one segment in several
// pieces (mprotect splits RELRO).

// ELFAddr returns the ELF virtual address of pc, a run-time address in
// mapping m of a file with the program headers loads (those not PT_LOAD are
// skipped). The segment
// is the one whose file bytes hold pc's file offset, pc - m.Start +
// m.Offset; else, for an offset in the page-aligned head of a segment or
// in its zero-filled tail, the segment whose aligned extent holds it. It
// returns false when pc is outside m or no segment holds it.
func ELFAddr(loads []elf.ProgHeader, m Mapping, pc uint64) (uint64, bool) {
	if pc < m.Start || pc >= m.End {
		return 0, false
	}
	off := pc - m.Start + m.Offset
	for _, p := range loads {
		if p.Type == elf.PT_LOAD && off >= p.Off && off-p.Off < p.Filesz {
			return off - p.Off + p.Vaddr, true
		}
	}
	for _, p := range loads {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if off >= p.Off && off-p.Off < max(p.Memsz, p.Filesz) || off < p.Off && off >= alignDown(p.Off, p.Align) {
			return off - p.Off + p.Vaddr, true
		}
	}
	return 0, false
}

// LoadBias returns the run-time address minus the ELF virtual address of
// the code of mapping m (one value for the whole mapping, as the kernel's
// unwinder wants it), through the PT_LOAD segment m maps: among the loads
// whose file bytes m covers, the one it covers most, an executable one
// first when m is executable. It returns false when m covers none. For
// every pc of m in that segment, pc - bias == ELFAddr(loads, m, pc).
func LoadBias(loads []elf.ProgHeader, m Mapping) (uint64, bool) {
	lo, hi := m.Offset, m.Offset+(m.End-m.Start)
	var best *elf.ProgHeader
	var bestN uint64
	bestX := false
	for i := range loads {
		p := &loads[i]
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		n := overlap(lo, hi, p.Off, p.Off+p.Filesz)
		if n == 0 {
			continue
		}
		x := m.Exec() && p.Flags&elf.PF_X != 0
		if best == nil || (x && !bestX) || (x == bestX && n > bestN) {
			best, bestN, bestX = p, n, x
		}
	}
	if best == nil {
		return 0, false
	}
	return m.Start - m.Offset + best.Off - best.Vaddr, true
}

// overlap returns the length of [a, b) ∩ [c, d), saturating on overflow.
func overlap(a, b, c, d uint64) uint64 {
	if d < c { // c+size wrapped in a crafted header
		d = ^uint64(0)
	}
	lo, hi := max(a, c), min(b, d)
	if hi <= lo {
		return 0
	}
	return hi - lo
}

func alignDown(v, align uint64) uint64 {
	if align <= 1 || align&(align-1) != 0 {
		return v
	}
	return v &^ (align - 1)
}
