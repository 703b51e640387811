package cfi

import (
	"fmt"
	"sync"
)

// NumRegs is the number of DWARF registers whose rules are tracked: enough
// for the integer registers and return address column of x86-64 (0-16) and
// AArch64 (0-32). Rules for higher registers (vector registers) are parsed
// and dropped.
const NumRegs = 33

// RuleKind says how a register is recovered in the caller's frame.
type RuleKind uint8

const (
	RuleUnset         RuleKind = iota // no rule: by convention, unchanged
	RuleUndefined                     // DW_CFA_undefined
	RuleSameValue                     // DW_CFA_same_value
	RuleOffset                        // saved at CFA+Off
	RuleValOffset                     // value is CFA+Off
	RuleRegister                      // value is in register Reg
	RuleExpression                    // saved at the address computed by Expr
	RuleValExpression                 // value is computed by Expr
)

// Rule is the recovery rule for one register.
type Rule struct {
	Kind RuleKind
	Reg  uint64
	Off  int64
	Expr []byte
}

// CFA is the rule for the canonical frame address: Reg+Off, or Expr when
// Expr is non-nil.
type CFA struct {
	Reg  uint64
	Off  int64
	Expr []byte
}

// Row is the unwind rules for the PCs [Start, End).
type Row struct {
	Start, End uint64
	CFA        CFA
	Regs       [NumRegs]Rule
}

type state struct {
	cfa  CFA
	regs [NumRegs]Rule
}

// Execute runs the CIE's initial instructions and the FDE's CFA program and
// calls emit for every row with a non-empty PC range, in address order. The
// Row passed to emit is reused; emit must copy what it keeps.
func (f *FDE) Execute(emit func(*Row) error) error {
	// The interpreter holds a Row and the initial state, about 3 KB:
	// reused across calls (a table build runs one program per function).
	in := interps.Get().(*interp)
	defer in.release()
	in.fde, in.emit = f, emit
	row := &in.row
	// CIE initial instructions: may not advance the location.
	row.Start = f.Begin
	if err := in.run(f.CIE.Initial, f.CIE.Off, true); err != nil {
		return err
	}
	in.initial = state{row.CFA, row.Regs}
	if err := in.run(f.Instructions, f.Off, false); err != nil {
		return err
	}
	if row.Start < f.End {
		row.End = f.End
		return emit(row)
	}
	return nil
}

var interps = sync.Pool{New: func() any { return new(interp) }}

// release resets in and returns it to the pool, without references into
// the FDE's data.
func (in *interp) release() {
	clear(in.stack[:cap(in.stack)])
	*in = interp{stack: in.stack[:0]}
	interps.Put(in)
}

type interp struct {
	fde     *FDE
	row     Row
	initial state
	stack   []state
	emit    func(*Row) error
}

func (in *interp) advance(to uint64, r *reader) error {
	if to < in.row.Start {
		r.fail("location moves backwards from %#x to %#x", in.row.Start, to)
		return r.err
	}
	if to > in.fde.End {
		// Rows past the FDE's end are unreachable; clamp.
		to = in.fde.End
	}
	if to > in.row.Start {
		in.row.End = to
		if err := in.emit(&in.row); err != nil {
			return err
		}
		in.row.Start = to
	}
	return nil
}

func (in *interp) reg(n uint64) *Rule {
	if n < NumRegs {
		return &in.row.Regs[n]
	}
	return new(Rule) // untracked register: discard
}

func (in *interp) run(prog []byte, entryOff int, isCIE bool) error {
	sec := in.fde.sec
	// Offsets in errors are relative to the section, approximately: the
	// entry's offset plus the position in its program.
	r := &reader{sec: sec, b: prog, off: entryOff}
	cie := in.fde.CIE
	daf := cie.DataAlign
	caf := cie.CodeAlign
	row := &in.row
	noAdvance := func() bool {
		if isCIE {
			r.fail("CIE initial instructions advance the location")
			return true
		}
		return false
	}
	for r.left() > 0 && r.err == nil {
		op := r.u8("CFA opcode")
		switch op >> 6 {
		case 1: // DW_CFA_advance_loc
			if noAdvance() {
				break
			}
			if err := in.advance(row.Start+uint64(op&0x3f)*caf, r); err != nil {
				return err
			}
			continue
		case 2: // DW_CFA_offset
			*in.reg(uint64(op & 0x3f)) = Rule{Kind: RuleOffset, Off: int64(r.uleb("offset")) * daf}
			continue
		case 3: // DW_CFA_restore
			if isCIE {
				r.fail("DW_CFA_restore in CIE")
				break
			}
			if n := uint64(op & 0x3f); n < NumRegs {
				row.Regs[n] = in.initial.regs[n]
			}
			continue
		}
		switch op {
		case 0x00: // DW_CFA_nop
		case 0x01: // DW_CFA_set_loc
			enc := cie.FDEEncoding
			if !sec.EH {
				enc = peAbsptr
			}
			to := r.ptr(enc, in.fde.Begin, "DW_CFA_set_loc")
			if r.err == nil && !noAdvance() {
				if err := in.advance(to, r); err != nil {
					return err
				}
			}
		case 0x02, 0x03, 0x04: // DW_CFA_advance_loc1/2/4
			var d uint64
			switch op {
			case 0x02:
				d = uint64(r.u8("advance_loc1"))
			case 0x03:
				d = uint64(r.u16("advance_loc2"))
			default:
				d = uint64(r.u32("advance_loc4"))
			}
			if r.err == nil && !noAdvance() {
				if err := in.advance(row.Start+d*caf, r); err != nil {
					return err
				}
			}
		case 0x05: // DW_CFA_offset_extended
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleOffset, Off: int64(r.uleb("offset")) * daf}
		case 0x06: // DW_CFA_restore_extended
			n := r.uleb("register")
			if isCIE {
				r.fail("DW_CFA_restore_extended in CIE")
			} else if n < NumRegs {
				row.Regs[n] = in.initial.regs[n]
			}
		case 0x07: // DW_CFA_undefined
			*in.reg(r.uleb("register")) = Rule{Kind: RuleUndefined}
		case 0x08: // DW_CFA_same_value
			*in.reg(r.uleb("register")) = Rule{Kind: RuleSameValue}
		case 0x09: // DW_CFA_register
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleRegister, Reg: r.uleb("register")}
		case 0x0a: // DW_CFA_remember_state
			if len(in.stack) >= maxStateStack {
				r.fail("DW_CFA_remember_state nested deeper than %d", maxStateStack)
				break
			}
			in.stack = append(in.stack, state{row.CFA, row.Regs})
		case 0x0b: // DW_CFA_restore_state
			if len(in.stack) == 0 {
				r.fail("DW_CFA_restore_state without remember_state")
				break
			}
			s := in.stack[len(in.stack)-1]
			in.stack = in.stack[:len(in.stack)-1]
			row.CFA, row.Regs = s.cfa, s.regs
		case 0x0c: // DW_CFA_def_cfa
			row.CFA = CFA{Reg: r.uleb("register"), Off: int64(r.uleb("offset"))}
		case 0x0d: // DW_CFA_def_cfa_register
			row.CFA.Reg = r.uleb("register")
			row.CFA.Expr = nil
		case 0x0e: // DW_CFA_def_cfa_offset
			row.CFA.Off = int64(r.uleb("offset"))
		case 0x0f: // DW_CFA_def_cfa_expression
			row.CFA = CFA{Expr: in.block(r)}
		case 0x10: // DW_CFA_expression
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleExpression, Expr: in.block(r)}
		case 0x11: // DW_CFA_offset_extended_sf
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleOffset, Off: r.sleb("offset") * daf}
		case 0x12: // DW_CFA_def_cfa_sf
			row.CFA = CFA{Reg: r.uleb("register"), Off: r.sleb("offset") * daf}
		case 0x13: // DW_CFA_def_cfa_offset_sf
			row.CFA.Off = r.sleb("offset") * daf
		case 0x14: // DW_CFA_val_offset
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleValOffset, Off: int64(r.uleb("offset")) * daf}
		case 0x15: // DW_CFA_val_offset_sf
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleValOffset, Off: r.sleb("offset") * daf}
		case 0x16: // DW_CFA_val_expression
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleValExpression, Expr: in.block(r)}
		case 0x1d: // DW_CFA_MIPS_advance_loc8
			d := r.u64("advance_loc8")
			if r.err == nil && !noAdvance() {
				if err := in.advance(row.Start+d*caf, r); err != nil {
					return err
				}
			}
		case 0x2d: // DW_CFA_GNU_window_save / DW_CFA_AARCH64_negate_ra_state
			// AArch64 pointer authentication toggles how x30 is signed;
			// the return address must then be stripped. Ignored here.
		case 0x2e: // DW_CFA_GNU_args_size
			r.uleb("args size")
		case 0x2f: // DW_CFA_GNU_negative_offset_extended
			n := r.uleb("register")
			*in.reg(n) = Rule{Kind: RuleOffset, Off: -int64(r.uleb("offset")) * daf}
		default:
			r.fail("unknown CFA opcode %#x", op)
		}
	}
	return r.err
}

func (in *interp) block(r *reader) []byte {
	n := r.uleb("expression length")
	if n > uint64(r.left()) {
		r.fail("expression length %d exceeds the %d bytes left", n, r.left())
		return nil
	}
	return r.bytes(int(n), "expression")
}

func (k RuleKind) String() string {
	switch k {
	case RuleUnset:
		return "unset"
	case RuleUndefined:
		return "undefined"
	case RuleSameValue:
		return "same_value"
	case RuleOffset:
		return "offset"
	case RuleValOffset:
		return "val_offset"
	case RuleRegister:
		return "register"
	case RuleExpression:
		return "expression"
	case RuleValExpression:
		return "val_expression"
	}
	return fmt.Sprintf("RuleKind(%d)", k)
}
