package unwinder

import (
	"debug/elf"
	"encoding/binary"
)

// Regs are the registers unwinding starts from.
type Regs struct {
	PC, SP, FP uint64
	LR         uint64 // arm64 x30; unused on amd64
}

// Signal frame offsets from SP at the trampoline (see bpf/unwind.h).
type sigOffsets struct{ pc, sp, fp uint64 }

var sigFrame = map[elf.Machine]sigOffsets{
	elf.EM_X86_64:  {pc: 168, sp: 160, fp: 120},
	elf.EM_AARCH64: {pc: 568, sp: 560, fp: 544}, // untested
}

// Unwind is the reference implementation of the walk bpf/unwind.h does in
// the kernel, for tests and for user-space unwinding of stopped processes.
// readMem reads process memory; tableFor returns the table and load bias
// (runtime address minus ELF virtual address) of the file mapped at pc, or
// ok=false for PCs without a table (those frames are unwound through the
// frame-pointer chain). It returns at most maxFrames PCs, innermost first.
func Unwind(regs Regs, readMem func(addr uint64, buf []byte) error, tableFor func(pc uint64) (t *Table, bias uint64, ok bool), maxFrames int) []uint64 {
	pcs, _ := UnwindFrom(regs, true, readMem, tableFor, maxFrames)
	return pcs
}

// UnwindFrom is Unwind from a frame that need not be the leaf: with exact
// false, regs.PC is a return address (the row of the call instruction
// before it applies). complete reports whether the walk reached the
// outermost frame (an end-of-stack row, or a zero return address) rather
// than stopping at a read it could not make or a frame that went the
// wrong way.
func UnwindFrom(regs Regs, exact bool, readMem func(addr uint64, buf []byte) error, tableFor func(pc uint64) (t *Table, bias uint64, ok bool), maxFrames int) (pcs []uint64, complete bool) {
	var buf [8]byte
	read := func(addr uint64) (uint64, bool) {
		if readMem(addr, buf[:]) != nil {
			return 0, false
		}
		return binary.LittleEndian.Uint64(buf[:]), true
	}
	pc, sp, fp := regs.PC, regs.SP, regs.FP
	for len(pcs) < maxFrames {
		pcs = append(pcs, pc)
		var row Row
		found := false
		machine := elf.EM_X86_64
		if t, bias, ok := tableFor(pc); ok {
			machine = t.machine
			rel := pc - bias
			if !exact {
				rel--
			}
			row, found = t.Lookup(rel)
		}
		kind := KindUnsupported
		if found {
			kind = row.Kind
		}
		var cfa, ra, nfp, nsp uint64
		ok := true
		nfp = fp
		switch kind {
		case KindEndOfStack:
			return pcs, true
		case KindCFA:
			base := sp
			if row.CFAReg == RegFP {
				base = fp
			}
			cfa = base + uint64(row.CFAOffset)
			if row.RAOffset == 0 {
				if len(pcs) != 1 {
					return pcs, false
				}
				ra = regs.LR
			} else if ra, ok = read(cfa + uint64(int64(row.RAOffset))); !ok {
				return pcs, false
			}
			if row.FPOffset != 0 {
				if nfp, ok = read(cfa + uint64(int64(row.FPOffset))); !ok {
					return pcs, false
				}
			}
			nsp = cfa
		case KindPLT:
			cfa = sp + uint64(row.CFAOffset)
			if uint8(pc&15) >= row.PLTThreshold {
				cfa += 8
			}
			if ra, ok = read(cfa - 8); !ok {
				return pcs, false
			}
			nsp = cfa
		case KindSignal:
			o := sigFrame[machine]
			var ok1, ok2, ok3 bool
			ra, ok1 = read(sp + o.pc)
			nsp, ok2 = read(sp + o.sp)
			nfp, ok3 = read(sp + o.fp)
			if !ok1 || !ok2 || !ok3 {
				return pcs, false
			}
			if ra == 0 {
				return pcs, true
			}
			pc, sp, fp, exact = ra, nsp, nfp, true
			continue
		default: // KindFramePointer, KindStackSwitch, KindUnsupported
			if fp == 0 {
				return pcs, true
			}
			var ok1, ok2 bool
			ra, ok1 = read(fp + 8)
			nfp, ok2 = read(fp)
			if !ok1 || !ok2 {
				return pcs, false
			}
			nsp = fp + 16
			if kind == KindStackSwitch {
				// The caller runs on another stack: its SP may be anywhere.
				if ra == 0 {
					return pcs, true
				}
				pc, sp, fp, exact = ra, nsp, nfp, false
				continue
			}
		}
		if ra == 0 {
			return pcs, true
		}
		if nsp <= sp {
			return pcs, false
		}
		pc, sp, fp, exact = ra, nsp, nfp, false
	}
	return pcs, false
}
