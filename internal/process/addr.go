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

// TextAdj returns the one number per file with which the kernel's
// unwinder (unwinder/bpf/unwind.h) and the sampler's walk of deferred
// samples turn a run-time pc into the ELF virtual address of the file's
// unwind rows: Vaddr - Off of its executable PT_LOAD segment, so that for
// every pc of a mapping m of that segment pc - Bias(m, adj) is
// ELFAddr(loads, m, pc). A file with no executable segment, or with
// several whose Vaddr - Off differ, has none (false): one number cannot
// convert all its code, and a wrong conversion would walk with another
// function's rows.
func TextAdj(loads []elf.ProgHeader) (int64, bool) {
	var adj int64
	found := false
	for _, p := range loads {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		a := int64(p.Vaddr - p.Off)
		if found && a != adj {
			return 0, false
		}
		adj, found = a, true
	}
	return adj, found
}

// Bias returns the run-time address minus the ELF virtual address of the
// code in mapping m of a file whose TextAdj is adj: m.Start - m.Offset -
// adj.
func Bias(m Mapping, adj int64) uint64 {
	return m.Start - m.Offset - uint64(adj)
}

func alignDown(v, align uint64) uint64 {
	if align <= 1 || align&(align-1) != 0 {
		return v
	}
	return v &^ (align - 1)
}
