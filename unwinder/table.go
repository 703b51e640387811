package unwinder

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/scorch-profiler/scorch/internal/mapped"
	"github.com/scorch-profiler/scorch/unwinder/internal/cfi"
)

// Kind says how to unwind a frame whose PC falls in a row.
type Kind uint8

const (
	// KindUnsupported: the CFI for this range cannot be expressed (see
	// Stats.Unsupported), or there is no CFI. Unwinders fall back to the
	// frame-pointer chain.
	KindUnsupported Kind = 0
	// KindCFA: CFA = (SP or FP) + CFAOffset; the return address is loaded
	// from CFA+RAOffset (or is in the link register when RAOffset is 0); the
	// caller's FP is loaded from CFA+FPOffset, or unchanged when FPOffset is 0.
	KindCFA Kind = 1
	// KindFramePointer: a standard frame record: CFA = FP+16, the return
	// address at CFA-8 and the caller's FP at CFA-16 (amd64 after
	// "push %rbp; mov %rsp,%rbp"; arm64 after "stp x29, x30, [sp, -N]!; mov x29, sp"
	// has CFA = FP+16 as well).
	KindFramePointer Kind = 2
	// KindEndOfStack: the outermost frame (return address undefined, e.g.
	// _start, the child side of clone/clone3) or a known entry point. Stop.
	KindEndOfStack Kind = 3
	// KindPLT: a lazy-binding PLT stub (amd64): CFA = SP + CFAOffset, plus 8
	// when (PC & 15) >= PLTThreshold; the return address at CFA-8.
	KindPLT Kind = 4
	// KindSignal: a signal trampoline (__restore_rt): SP points to the
	// kernel's ucontext; the interrupted PC, SP and FP are loaded from it.
	KindSignal Kind = 5
	// KindStackSwitch: a frame record (CFA = FP+16, as KindFramePointer)
	// whose caller runs on another stack, so the caller's SP need not be
	// above this frame's: Go's runtime.asmcgocall at its call into C on
	// the system stack, whose FP still points to the frame record on the
	// goroutine stack.
	KindStackSwitch Kind = 6
)

var kindNames = [...]string{"unsupported", "cfa", "frame-pointer", "end-of-stack", "plt", "signal", "stack-switch"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Reg is the register a CFA is computed from.
type Reg uint8

const (
	RegSP Reg = 0 // rsp / sp
	RegFP Reg = 1 // rbp / x29
)

// Row is the decoded form of one table entry. It applies to the PCs from
// PC up to the next row's PC.
type Row struct {
	PC           uint64 // ELF virtual address (runtime PC minus load bias)
	Kind         Kind
	CFAReg       Reg
	CFAOffset    int32 // bytes; multiple of 8, 0..32760
	FPOffset     int16 // caller's FP at CFA+FPOffset; 0: FP unchanged. Multiple of 8.
	RAOffset     int16 // return address at CFA+RAOffset; 0: in the link register (arm64). Multiple of 8.
	PLTThreshold uint8 // KindPLT only
}

// RowSize is the size in bytes of one encoded row.
const RowSize = 8

// Encoding limits (see unwind_table.h).
const (
	maxCFAOffset = 0xfff * 8
	minSlotOff   = -128 * 8
	maxSlotOff   = 127 * 8
)

// encode packs r as described in bpf/unwind_table.h:
//
//	u32 pc; u16 cfa = kind | reg<<3 | (cfa_off/8)<<4; s8 fp; s8 ra
func (r Row) encode() uint64 {
	fp := int8(r.FPOffset / 8)
	if r.Kind == KindPLT {
		fp = int8(r.PLTThreshold)
	}
	cfa := uint16(r.Kind&7) | uint16(r.CFAReg&1)<<3 | uint16(r.CFAOffset/8)<<4
	return uint64(uint32(r.PC)) | uint64(cfa)<<32 | uint64(uint8(fp))<<48 | uint64(uint8(int8(r.RAOffset/8)))<<56
}

func decode(v uint64, base uint64) Row {
	cfa := uint16(v >> 32)
	r := Row{
		PC:        base + uint64(uint32(v)),
		Kind:      Kind(cfa & 7),
		CFAReg:    Reg(cfa >> 3 & 1),
		CFAOffset: int32(cfa>>4) * 8,
		RAOffset:  int16(int8(v>>56)) * 8,
	}
	fp := int8(v >> 48)
	if r.Kind == KindPLT {
		r.PLTThreshold = uint8(fp)
	} else {
		r.FPOffset = int16(fp) * 8
	}
	return r
}

// Table is the compiled unwind table of one ELF file, sorted by PC.
type Table struct {
	machine elf.Machine
	rows    []uint64 // encoded rows, sorted by PC
	stats   Stats
}

// Stats describes a table.
type Stats struct {
	FDEs        int            // FDEs read
	Rows        int            // rows after merging
	Bytes       int            // encoded size
	TextBytes   uint64         // size of executable sections
	Unsupported map[string]int // unsupported rows (before merging) by reason
}

// Rows returns the decoded rows.
func (t *Table) Rows() []Row {
	out := make([]Row, len(t.rows))
	for i, v := range t.rows {
		out[i] = decode(v, 0)
	}
	return out
}

// Stats returns statistics about the table.
func (t *Table) Stats() Stats {
	s := t.stats
	s.Unsupported = maps.Clone(t.stats.Unsupported)
	return s
}

// AppendBinary appends the table in the format of struct unwind_row
// (bpf/unwind_table.h), little endian, to b.
func (t *Table) AppendBinary(b []byte) ([]byte, error) {
	for _, v := range t.rows {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b, nil
}

// FromBinary is the table whose rows AppendBinary wrote (as the kernel
// keeps them), for a machine: what user space reads back from the kernel
// to finish a walk the kernel handed over. It fails on a length that is
// not a whole number of rows.
func FromBinary(machine elf.Machine, b []byte) (*Table, error) {
	if len(b)%RowSize != 0 {
		return nil, fmt.Errorf("unwinder: %d bytes of rows is not a multiple of %d", len(b), RowSize)
	}
	rows := make([]uint64, len(b)/RowSize)
	for i := range rows {
		rows[i] = binary.LittleEndian.Uint64(b[i*RowSize:])
	}
	return &Table{machine: machine, rows: rows}, nil
}

// Lookup returns the row covering the ELF virtual address pc.
func (t *Table) Lookup(pc uint64) (Row, bool) {
	if pc > 0xffffffff || len(t.rows) == 0 {
		return Row{}, false
	}
	i := sort.Search(len(t.rows), func(i int) bool { return uint32(t.rows[i]) > uint32(pc) })
	if i == 0 {
		return Row{}, false
	}
	return decode(t.rows[i-1], 0), true
}

// DWARF register numbers.
const (
	amd64RBP = 6
	amd64RSP = 7
	amd64RA  = 16
	arm64FP  = 29
	arm64LR  = 30
	arm64SP  = 31
)

type arch struct {
	sp, fp, ra uint64
	raInReg    bool // the return address may live in a register (LR)
}

var (
	archAMD64 = arch{sp: amd64RSP, fp: amd64RBP, ra: amd64RA}
	archARM64 = arch{sp: arm64SP, fp: arm64FP, ra: arm64LR, raInReg: true}
)

// endOfStackSymbols are functions where unwinding stops even if their CFI
// describes a caller: process and thread entry points.
var endOfStackSymbols = map[string]bool{
	"_start":              true,
	"start_thread":        true,
	"runtime.goexit.abi0": true,
	"runtime.rt0_go.abi0": true,
	"runtime.mstart.abi0": true,
	// A Go program's ELF entry point and the function it jumps to: the
	// process's first frame, whose "return address" is argc.
	"_rt0_amd64_linux": true,
	"_rt0_amd64":       true,
	"_rt0_arm64_linux": true,
	"_rt0_arm64":       true,
	// Go functions that switch to the system stack and never return to
	// their caller there: the system stack ends with them.
	"runtime.morestack.abi0": true,
	"runtime.mcall":          true, // ABIInternal since Go 1.17
	"runtime.mcall.abi0":     true,
}

// stackSwitchFuncs are Go runtime functions that build a frame record on
// the goroutine stack, switch to the system stack and call a function
// there. Unwinding goes from the function, or its callee, back to the
// goroutine stack through the frame record (KindStackSwitch rows, see
// goFuncRows), as Go's own traceback does.
var stackSwitchFuncs = map[string]bool{
	"runtime.asmcgocall.abi0":  true, // into C
	"runtime.systemstack.abi0": true,
	// vDSO calls run on the system stack.
	"runtime.nanotime1.abi0": true,
	"runtime.walltime.abi0":  true, // before Go 1.23
	"runtime.vgetrandom1":    true,
	"time.now":               true, // Go 1.23+
}

// Build compiles the .eh_frame and .debug_frame of f into a table. PCs not
// covered by any FDE get KindUnsupported rows. r reads the bytes f was
// parsed from: given the *os.File, the big sections (.text, .gopclntab,
// .eh_frame, .symtab) are mapped rather than copied, which in a big Go
// binary is most of the build's time; nil reads them through f. A mapped
// file truncated while Build runs faults: call it under process.Guard.
func Build(f *elf.File, r io.ReaderAt) (*Table, error) {
	var a arch
	switch f.Machine {
	case elf.EM_X86_64:
		a = archAMD64
	case elf.EM_AARCH64:
		a = archARM64
	default:
		return nil, fmt.Errorf("unwinder: unsupported machine %v", f.Machine)
	}
	if f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("unwinder: unsupported ELF class %v", f.Class)
	}
	b := &builder{arch: a, unsupported: map[string]int{}, r: r}
	defer b.closeSections()
	var textBase, dataBase uint64
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 {
			b.textBytes += s.Size
		}
		switch s.Name {
		case ".text":
			textBase = s.Addr
		case ".got":
			dataBase = s.Addr
		}
	}
	var fdes []*cfi.FDE
	for _, name := range []string{".eh_frame", ".debug_frame"} {
		s := f.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := b.section(s, cfi.MaxSectionSize)
		if err != nil {
			return nil, fmt.Errorf("unwinder: reading %s: %w", name, err)
		}
		fs, err := cfi.Parse(&cfi.Section{
			Name: name, Data: data, Addr: s.Addr, EH: name == ".eh_frame",
			PtrSize: 8, Order: f.ByteOrder, TextBase: textBase, DataBase: dataBase,
		})
		if err != nil {
			return nil, fmt.Errorf("unwinder: %w", err)
		}
		fdes = append(fdes, fs...)
	}
	b.fdes = len(fdes)
	if err := b.build(fdes); err != nil {
		return nil, err
	}
	var goFuncs []goFunc
	if f.Machine == elf.EM_X86_64 {
		// Go functions: rows from the pclntab's SP deltas, which stripped
		// binaries keep and whose saved FP .debug_frame does not describe.
		var err error
		if goFuncs, err = b.goRows(f); err != nil {
			return nil, err
		}
	}
	b.applySymbols(f, goFuncs)
	b.crtSections(f)
	b.entryEnd(f)
	b.gapCode(f, len(goFuncs) > 0) // after entryEnd: an entry point in a gap ends the stack
	b.merge()
	t := &Table{machine: f.Machine, rows: slices.Clip(b.rows)}
	t.stats = Stats{FDEs: b.fdes, Rows: len(t.rows), Bytes: len(t.rows) * RowSize, TextBytes: b.textBytes, Unsupported: b.unsupported}
	return t, nil
}

// builder keeps its rows encoded (8 bytes each, not the 24 of a Row) and
// drops a row equal to the one before it as it is appended: a big binary
// has millions of CFI rows, and the builder's rows were most of the
// agent's memory while it built the table of a compiler or a browser that
// started on the host.
type builder struct {
	arch        arch
	rows        []uint64 // encoded, sorted by PC
	fdes        int
	textBytes   uint64
	unsupported map[string]int
	gaps        [][2]uint64 // [lo, hi) between FDEs, for gapCode

	r        io.ReaderAt      // the file's bytes (see Build); nil: through the elf.File
	sections []*mapped.Region // what section mapped or read, released by closeSections
}

// maxSection bounds a section the builder reads other than the CFI and
// pclntab (whose parsers have their own limits): .text, .symtab, .strtab.
const maxSection = 1 << 30

// section returns the bytes of s, mapped from b.r where it can be. They
// stay valid until closeSections: nothing the table keeps may point into
// them.
func (b *builder) section(s *elf.Section, max uint64) ([]byte, error) {
	reg, err := mapped.Section(b.r, s, max)
	if err != nil {
		return nil, err
	}
	b.sections = append(b.sections, reg)
	return reg.Bytes(), nil
}

func (b *builder) closeSections() {
	for _, reg := range b.sections {
		reg.Close()
	}
	b.sections = nil
}

const reasonNoCFI = "no CFI (gap between FDEs)"

func (b *builder) build(fdes []*cfi.FDE) error {
	// Sort by start; on overlap, the FDE that starts first wins (ties: the
	// .eh_frame one, which comes first in fdes).
	slices.SortStableFunc(fdes, func(x, y *cfi.FDE) int {
		switch {
		case x.Begin < y.Begin:
			return -1
		case x.Begin > y.Begin:
			return 1
		}
		return 0
	})
	var end uint64
	for _, f := range fdes {
		first := len(b.rows)
		if f.Begin == f.End || f.Begin == 0 {
			continue // empty, or discarded by the linker
		}
		if f.Begin < end {
			b.unsupported["overlapping FDE (skipped)"]++
			continue
		}
		if f.End > 0xffffffff {
			return fmt.Errorf("unwinder: FDE at %#x covers %#x..%#x, beyond the 4 GiB the table format addresses", f.Off, f.Begin, f.End)
		}
		if end != 0 && f.Begin > end {
			// A gap. Gaps shorter than a function alignment are padding no
			// code runs in (return addresses are looked up as PC-1), so
			// they keep the previous FDE's last rule and cost no row.
			if f.Begin-end >= 16 {
				b.add(Row{PC: end, Kind: KindUnsupported})
				b.unsupported[reasonNoCFI]++
				b.gaps = append(b.gaps, [2]uint64{end, f.Begin})
			}
		}
		signal := f.CIE.SignalFrame
		err := f.Execute(func(cr *cfi.Row) error {
			r, reason := b.compile(cr, signal)
			if reason != "" {
				b.unsupported[reason]++
			}
			b.add(r)
			return nil
		})
		if err != nil {
			// One bad FDE makes its range unsupported, not the whole file.
			b.unsupported["malformed FDE: "+errorClass(err)]++
			b.rows = b.rows[:first]
			b.add(Row{PC: f.Begin, Kind: KindUnsupported})
		}
		end = f.End
	}
	if end != 0 {
		b.add(Row{PC: end, Kind: KindUnsupported})
	}
	return nil
}

// add appends r, which starts at or after every row so far. A row with
// the rule of the row before it adds nothing; one at the same PC as the
// row before it replaces it (the last row for a PC wins).
func (b *builder) add(r Row) {
	v := r.encode()
	if n := len(b.rows); n > 0 {
		last := b.rows[n-1]
		switch {
		case last>>32 == v>>32:
			return
		case uint32(last) == uint32(v):
			b.rows = b.rows[:n-1]
			if n > 1 && b.rows[n-2]>>32 == v>>32 {
				return
			}
		}
	}
	b.rows = append(b.rows, v)
}

func errorClass(err error) string {
	var fe *cfi.FormatError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}

// compile turns one CFI row into a table row, or a KindUnsupported row and
// the reason.
func (b *builder) compile(cr *cfi.Row, signal bool) (Row, string) {
	r := Row{PC: cr.Start}
	unsupported := func(reason string) (Row, string) {
		return Row{PC: cr.Start, Kind: KindUnsupported}, reason
	}
	a := b.arch
	if signal {
		if a == archAMD64 && isAMD64SigreturnCFA(cr.CFA.Expr) {
			r.Kind = KindSignal
			return r, ""
		}
		return unsupported("signal frame with unknown layout")
	}
	ra := cr.Regs[a.ra]
	if ra.Kind == cfi.RuleUndefined {
		r.Kind = KindEndOfStack
		return r, ""
	}
	if cr.CFA.Expr != nil {
		if thr, ok := isAMD64PLTCFA(cr.CFA.Expr); ok && a == archAMD64 {
			r.Kind = KindPLT
			r.CFAReg = RegSP
			r.CFAOffset = 8
			r.RAOffset = -8
			r.PLTThreshold = thr
			if ra.Kind != cfi.RuleOffset || ra.Off != -8 {
				return unsupported("PLT with unusual return address rule")
			}
			return r, ""
		}
		return unsupported("CFA is a DWARF expression")
	}
	switch cr.CFA.Reg {
	case a.sp:
		r.CFAReg = RegSP
	case a.fp:
		r.CFAReg = RegFP
	default:
		return unsupported(fmt.Sprintf("CFA based on register %d", cr.CFA.Reg))
	}
	off := cr.CFA.Off
	if off < 0 || off > maxCFAOffset || off%8 != 0 {
		if off%8 != 0 {
			return unsupported("CFA offset not a multiple of 8")
		}
		return unsupported("CFA offset out of range")
	}
	r.CFAOffset = int32(off)
	switch ra.Kind {
	case cfi.RuleOffset:
		if ra.Off == 0 || ra.Off < minSlotOff || ra.Off > maxSlotOff || ra.Off%8 != 0 {
			return unsupported("return address slot out of range")
		}
		if a == archAMD64 && ra.Off != -8 {
			return unsupported("return address not at CFA-8")
		}
		r.RAOffset = int16(ra.Off)
	case cfi.RuleUnset, cfi.RuleSameValue:
		if !a.raInReg {
			return unsupported("return address rule: " + ra.Kind.String())
		}
		r.RAOffset = 0 // still in LR (arm64 leaf or prologue)
	default:
		return unsupported("return address rule: " + ra.Kind.String())
	}
	fp := cr.Regs[a.fp]
	switch fp.Kind {
	case cfi.RuleUnset, cfi.RuleSameValue:
	case cfi.RuleOffset:
		if fp.Off == 0 || fp.Off < minSlotOff || fp.Off > maxSlotOff || fp.Off%8 != 0 {
			return unsupported("saved frame pointer slot out of range")
		}
		r.FPOffset = int16(fp.Off)
	default:
		return unsupported("frame pointer rule: " + fp.Kind.String())
	}
	r.Kind = KindCFA
	if r.CFAReg == RegFP && r.CFAOffset == 16 && r.FPOffset == -16 && r.RAOffset == -8 {
		r.Kind = KindFramePointer
	}
	return r, ""
}

// isAMD64PLTCFA matches the CFA expression binutils emits for lazy PLT
// entries: DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and;
// DW_OP_litN; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus. N is 11 for the
// classic PLT, 10 for IBT PLTs, 5 for BND PLTs.
func isAMD64PLTCFA(e []byte) (uint8, bool) {
	if len(e) != 11 || e[0] != 0x77 || e[1] != 0x08 || e[2] != 0x80 || e[3] != 0x00 ||
		e[4] != 0x3f || e[5] != 0x1a || e[6] < 0x30 || e[6] > 0x4f || e[7] != 0x2a ||
		e[8] != 0x33 || e[9] != 0x24 || e[10] != 0x22 {
		return 0, false
	}
	return e[6] - 0x30, true
}

// isAMD64SigreturnCFA matches glibc's __restore_rt CFA: DW_OP_breg7 (rsp)
// 160; DW_OP_deref, i.e. uc_mcontext.rsp of the ucontext at rsp.
func isAMD64SigreturnCFA(e []byte) bool {
	return len(e) == 4 && e[0] == 0x77 && e[1] == 0xa0 && e[2] == 0x01 && e[3] == 0x06
}

// applySymbols marks the ranges of entry-point functions as end of stack.
// The functions are found by their ELF symbols, or, in stripped Go
// binaries, among the functions of the pclntab (goFuncs). (The stack
// switches of stackSwitchFuncs get their rows from the pclntab: see
// goFuncRows.)
func (b *builder) applySymbols(f *elf.File, goFuncs []goFunc) {
	var eos [][2]uint64
	b.funcSymbols(f, func(name []byte) bool { return endOfStackSymbols[string(name)] }, func(s elf.Symbol) {
		eos = append(eos, [2]uint64{s.Value, s.Value + s.Size})
	})
	if len(eos) == 0 {
		for _, g := range goFuncs {
			if endOfStackSymbols[g.name] {
				eos = append(eos, [2]uint64{g.entry, g.end})
			}
		}
	}
	for _, rg := range eos {
		b.markRange(rg[0], rg[1], Row{Kind: KindEndOfStack})
	}
}

// funcSymbols calls fn for each sized function symbol of f's .symtab and
// .dynsym (64-bit) whose name want accepts. It reads the symbol and string
// tables raw instead of through (*elf.File).Symbols, which makes a string
// of every name: 45 MB for node, of which a few names are wanted.
func (b *builder) funcSymbols(f *elf.File, want func(name []byte) bool, fn func(elf.Symbol)) {
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_SYMTAB && sec.Type != elf.SHT_DYNSYM || int(sec.Link) >= len(f.Sections) {
			continue
		}
		syms, err := b.section(sec, maxSection)
		if err != nil {
			continue
		}
		strs, err := b.section(f.Sections[sec.Link], maxSection)
		if err != nil {
			continue
		}
		for off := elf.Sym64Size; off+elf.Sym64Size <= len(syms); off += elf.Sym64Size {
			e := syms[off : off+elf.Sym64Size]
			info := e[4]
			size := f.ByteOrder.Uint64(e[16:24])
			if elf.ST_TYPE(info) != elf.STT_FUNC || size == 0 {
				continue
			}
			name := f.ByteOrder.Uint32(e[0:4])
			if int(name) >= len(strs) {
				continue
			}
			n := bytes.IndexByte(strs[name:], 0)
			if n < 0 || !want(strs[name:int(name)+n]) {
				continue
			}
			fn(elf.Symbol{
				Name:    string(strs[name : int(name)+n]),
				Info:    info,
				Other:   e[5],
				Section: elf.SectionIndex(f.ByteOrder.Uint16(e[6:8])),
				Value:   f.ByteOrder.Uint64(e[8:16]),
				Size:    size,
			})
		}
	}
}

// amd64 instructions of glibc's crti/crtn code (see crtSections).
var (
	amd64Endbr64    = []byte{0xf3, 0x0f, 0x1e, 0xfa}
	amd64SubRSP8    = []byte{0x48, 0x83, 0xec, 0x08}       // sub $8, %rsp
	amd64AddRSP8Ret = []byte{0x48, 0x83, 0xc4, 0x08, 0xc3} // add $8, %rsp; ret
)

// crtSections gives rows to .init and .fini on amd64. They hold glibc's
// crti/crtn code (sub $8,%rsp; a call; add $8,%rsp; ret), which has no
// CFI: a sample there (a library's constructors called by ld.so at
// start-up, its destructors at exit) would be walked by frame pointer,
// which skips its caller. Sections that do not hold exactly that pattern
// keep their rows.
func (b *builder) crtSections(f *elf.File) {
	if f.Machine != elf.EM_X86_64 {
		return
	}
	for _, name := range []string{".init", ".fini"} {
		s := f.Section(name)
		if s == nil || s.Type != elf.SHT_PROGBITS || s.Size == 0 || s.Size > 64 {
			continue
		}
		code, err := s.Data()
		if err != nil {
			continue
		}
		i := 0
		if bytes.HasPrefix(code, amd64Endbr64) {
			i = len(amd64Endbr64)
		}
		if !bytes.HasPrefix(code[i:], amd64SubRSP8) {
			continue
		}
		body := i + len(amd64SubRSP8)
		j := bytes.Index(code[body:], amd64AddRSP8Ret)
		if j < 0 || body+j+len(amd64AddRSP8Ret) != len(code) {
			continue
		}
		ret := uint64(body + j + len(amd64SubRSP8)) // the ret's offset
		frame := func(off int32) Row { return Row{Kind: KindCFA, CFAReg: RegSP, CFAOffset: off, RAOffset: -8} }
		b.markRange(s.Addr, s.Addr+uint64(body), frame(8))
		b.markRange(s.Addr+uint64(body), s.Addr+ret, frame(16))
		b.markRange(s.Addr+ret, s.Addr+s.Size, frame(8))
	}
}

// entryEnd ends the stack at the file's entry point where no CFI covers
// it. The dynamic loader's _start (glibc's RTLD_START) has none, and it is
// the outermost frame of every dynamically linked process while ld.so
// runs: walking on from it reads argc as a return address, a garbage PC.
// Nothing calls an entry point, so its code is always the first frame.
func (b *builder) entryEnd(f *elf.File) {
	if f.Entry == 0 || f.Entry > 0xffffffff {
		return
	}
	var sec *elf.Section
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR != 0 && s.Addr <= f.Entry && f.Entry < s.Addr+s.Size {
			sec = s
			break
		}
	}
	if sec == nil {
		return
	}
	hi := min(sec.Addr+sec.Size, 0xffffffff)
	i, _ := slices.BinarySearchFunc(b.rows, f.Entry+1, func(v uint64, pc uint64) int {
		return cmp.Compare(uint64(uint32(v)), pc)
	})
	// b.rows[i-1] is the row in force at f.Entry, b.rows[i] the next one.
	if i > 0 && decode(b.rows[i-1], 0).Kind != KindUnsupported {
		return
	}
	if i < len(b.rows) {
		hi = min(hi, uint64(uint32(b.rows[i])))
	}
	b.markRange(f.Entry, hi, Row{Kind: KindEndOfStack})
}

// markRange makes [lo, hi) use row r, keeping the rule after hi.
func (b *builder) markRange(lo, hi uint64, r Row) {
	if hi > 0xffffffff || lo >= hi {
		return // beyond what the table format addresses
	}
	i, _ := slices.BinarySearchFunc(b.rows, lo, func(v uint64, pc uint64) int {
		switch {
		case uint64(uint32(v)) < pc:
			return -1
		case uint64(uint32(v)) > pc:
			return 1
		}
		return 0
	})
	j := i
	for j < len(b.rows) && uint64(uint32(b.rows[j])) < hi {
		j++
	}
	r.PC = lo
	repl := []uint64{r.encode()}
	if j == len(b.rows) || uint64(uint32(b.rows[j])) != hi {
		// Keep the rule in force just before hi for the PCs after hi.
		after := Row{PC: hi, Kind: KindUnsupported}.encode()
		if j > 0 {
			after = b.rows[j-1]&^0xffffffff | hi
		}
		repl = append(repl, after)
	}
	b.rows = slices.Replace(b.rows, i, j, repl...)
}

// merge drops rows equal to their predecessor (apart from the PC).
func (b *builder) merge() {
	out := b.rows[:0]
	for _, v := range b.rows {
		if n := len(out); n > 0 && out[n-1]>>32 == v>>32 {
			continue
		}
		out = append(out, v)
	}
	b.rows = out
}

// ReasonSummary formats Stats.Unsupported, most frequent first.
func (s Stats) ReasonSummary() string {
	keys := slices.Collect(maps.Keys(s.Unsupported))
	slices.SortFunc(keys, func(a, b string) int { return s.Unsupported[b] - s.Unsupported[a] })
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%d %s; ", s.Unsupported[k], k)
	}
	return strings.TrimSuffix(sb.String(), "; ")
}
