package unwinder

import (
	"cmp"
	"debug/elf"
	"encoding/binary"
	"slices"
)

// Code between FDEs on amd64: gcc's crtstuff.
//
// Every program and library gcc links holds a few functions from
// crtbegin(S).o that have no CFI (crtstuff.c is compiled without unwind
// tables): deregister_tm_clones, register_tm_clones, __do_global_dtors_aux
// and frame_dummy. The dynamic loader calls frame_dummy (through
// .init_array) as it starts a program and __do_global_dtors_aux (through
// .fini_array) as it exits, so a short-lived process is sampled there
// often enough to matter; walked by frame pointer they lose their caller.
// Their code is a handful of instructions that keep the return address at
// the top of the stack, or one push of %rbp below it.
//
// gapCode reads the code of each gap between FDEs instruction by
// instruction, knowing only the few instructions such code is made of,
// and gives each instruction a row: CFA = SP+8 outside a push of %rbp,
// SP+16 inside it. A gap holding any other instruction keeps no rows from
// the first one it does not know: a guess is worse than the frame-pointer
// walk, which at least marks a frameless leaf's caller unknown.

// maxGapCode bounds the bytes of a gap gapCode reads: gcc's crtstuff
// functions take under 200.
const maxGapCode = 4096

// gapCode gives rows to the code of the gaps b.build recorded, on amd64,
// in files that are not Go (isGo: Go's gaps are its functions' padding,
// and its code has pclntab rows). Each gap that is still one holds a
// single row, KindUnsupported at its start; it is replaced by the rows of
// the code decoded there, and the rows are rebuilt once.
func (b *builder) gapCode(f *elf.File, isGo bool) {
	if f.Machine != elf.EM_X86_64 || isGo {
		return
	}
	repl := map[int][]uint64{} // index in b.rows -> the rows in its place
	for _, g := range b.gaps {
		i, found := slices.BinarySearchFunc(b.rows, g[0], func(v uint64, pc uint64) int {
			return cmp.Compare(uint64(uint32(v)), pc)
		})
		if !found || decode(b.rows[i], 0).Kind != KindUnsupported {
			continue // covered since (symbols)
		}
		hi := g[1]
		if i+1 < len(b.rows) {
			hi = min(hi, uint64(uint32(b.rows[i+1])))
		}
		if hi <= g[0] || hi-g[0] > maxGapCode {
			continue // not crtstuff; and a hostile file could name gigabytes
		}
		code := sectionBytes(f, g[0], hi)
		if code == nil {
			continue
		}
		rows := gapRows(code, g[0])
		if rows == nil {
			continue
		}
		if end := uint64(uint32(rows[len(rows)-1])); end < hi {
			// Undecoded from here: unsupported, as before.
			rows[len(rows)-1] = Row{PC: end, Kind: KindUnsupported}.encode()
		} else {
			rows = rows[:len(rows)-1]
		}
		repl[i] = rows
		b.unsupported[reasonNoCFI]--
		if b.unsupported[reasonNoCFI] <= 0 {
			delete(b.unsupported, reasonNoCFI)
		}
	}
	if len(repl) == 0 {
		return
	}
	out := make([]uint64, 0, len(b.rows)+4*len(repl))
	for i, v := range b.rows {
		if r, ok := repl[i]; ok {
			out = append(out, r...)
			continue
		}
		out = append(out, v)
	}
	b.rows = out
}

// gapRows decodes the code at addr and returns its rows, the last one
// marking where decoding stopped (its rule is a placeholder); nil when
// nothing but padding was decoded.
func gapRows(code []byte, addr uint64) []uint64 {
	frame := func(pc uint64, depth int) uint64 {
		return Row{PC: pc, Kind: KindCFA, CFAReg: RegSP, CFAOffset: int32(8 + depth), RAOffset: -8}.encode()
	}
	var rows []uint64
	depth, code0 := 0, false // bytes pushed below the return address; any code but padding
	emit := func(off int) {
		v := frame(addr+uint64(off), depth)
		if n := len(rows); n > 0 && rows[n-1]>>32 == v>>32 {
			return
		}
		rows = append(rows, v)
	}
	i := 0
	for i < len(code) {
		n, eff := amd64Insn(code[i:])
		if n == 0 {
			break
		}
		if code[i] != 0x90 && code[i] != 0xcc && code[i] != 0x0f && code[i] != 0x66 && code[i] != 0x2e {
			code0 = true
		}
		emit(i)
		next := depth
		switch eff {
		case insnPushRBP:
			next += 8
		case insnPopRBP:
			next -= 8
		case insnEnd:
			if depth != 0 {
				n = -1 // a return or jump with something pushed: not code we know
			}
		}
		if n < 0 || next < 0 || next > 8 {
			break
		}
		depth = next
		i += n
	}
	if !code0 || i == 0 {
		return nil
	}
	return append(rows, frame(addr+uint64(i), 0)) // where decoding stopped
}

// sectionBytes returns the bytes of [lo, hi) from the executable section
// holding them, or nil.
func sectionBytes(f *elf.File, lo, hi uint64) []byte {
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR == 0 || s.Type != elf.SHT_PROGBITS || lo < s.Addr || hi > s.Addr+s.Size {
			continue
		}
		buf := make([]byte, hi-lo)
		if _, err := s.ReadAt(buf, int64(lo-s.Addr)); err != nil {
			return nil
		}
		return buf
	}
	return nil
}

// What an instruction does to the frame, for gapCode.
const (
	insnOther   = iota // leaves %rsp alone
	insnPushRBP        // push %rbp
	insnPopRBP         // pop %rbp
	insnEnd            // ret or an unconditional jump: the next instruction starts afresh
)

// amd64Insn returns the length of the instruction at the start of code and
// what it does to the stack, for the instructions of gcc's crtstuff and of
// the padding between functions; 0 for any other.
func amd64Insn(code []byte) (n int, eff int) {
	at := func(i int) int {
		if i < len(code) {
			return int(code[i])
		}
		return -1
	}
	fits := func(n int) int {
		if n <= len(code) {
			return n
		}
		return 0
	}
	ripRel := func(modrm int) bool { return modrm >= 0 && modrm&0xc7 == 0x05 }
	regReg := func(modrm int) bool { return modrm >= 0xc0 && modrm&7 != 4 } // a register destination other than %rsp
	switch at(0) {
	case 0xf3:
		if len(code) >= 4 && binary.BigEndian.Uint32(code) == 0xf30f1efa { // endbr64
			return 4, insnOther
		}
	case 0x55:
		return 1, insnPushRBP
	case 0x5d:
		return 1, insnPopRBP
	case 0xc3:
		return 1, insnEnd
	case 0x90, 0xcc: // nop, int3 (padding)
		return 1, insnOther
	case 0x74, 0x75: // je, jne rel8
		return fits(2), insnOther
	case 0xeb: // jmp rel8
		return fits(2), insnEnd
	case 0xe8: // call rel32
		return fits(5), insnOther
	case 0xe9: // jmp rel32
		return fits(5), insnEnd
	case 0xff:
		if at(1) == 0xe0 { // jmp *%rax
			return 2, insnEnd
		}
	case 0x80: // cmpb $imm8, disp32(%rip)
		if at(1) == 0x3d {
			return fits(7), insnOther
		}
	case 0xc6: // movb $imm8, disp32(%rip)
		if at(1) == 0x05 {
			return fits(7), insnOther
		}
	case 0x66, 0x2e, 0x0f: // multi-byte nops, with prefixes
		i := 0
		for at(i) == 0x66 || at(i) == 0x2e {
			i++
		}
		if at(i) == 0x90 && i > 0 {
			return i + 1, insnOther
		}
		if at(i) != 0x0f || at(i+1) != 0x1f || at(i+2) < 0 {
			return 0, 0
		}
		modrm := at(i + 2)
		n := i + 3
		if modrm>>6 != 3 && modrm&7 == 4 {
			n++ // SIB
		}
		switch modrm >> 6 {
		case 1:
			n++
		case 2:
			n += 4
		case 3:
			return 0, 0
		}
		return fits(n), insnOther
	case 0x48: // REX.W
		op, modrm := at(1), at(2)
		switch op {
		case 0x8d, 0x8b: // lea, mov disp32(%rip), %reg
			if ripRel(modrm) && (modrm>>3)&7 != 4 {
				return fits(7), insnOther
			}
		case 0x83: // cmpq $imm8, disp32(%rip)
			if modrm == 0x3d {
				return fits(8), insnOther
			}
		case 0x89: // mov %reg, %reg (%rsp to %rbp included)
			if regReg(modrm) {
				return 3, insnOther
			}
		case 0x39, 0x85: // cmp, test
			if modrm >= 0xc0 {
				return 3, insnOther
			}
		case 0x29, 0x01: // sub, add: not to %rsp
			if regReg(modrm) {
				return 3, insnOther
			}
		case 0xd1: // shift by one
			if regReg(modrm) {
				return 3, insnOther
			}
		case 0xc1: // shift by imm8
			if regReg(modrm) {
				return fits(4), insnOther
			}
		}
	}
	return 0, 0
}
