package unwinder

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"

	"github.com/scorch-profiler/scorch/internal/gopclntab"
)

// goFunc is a function of Go's pclntab, under its ELF symbol name for the
// runtime's assembly functions (".abi0" added where the symbol table has
// it), so that the tables of endOfStackSymbols and stackSwitchFuncs apply.
type goFunc struct {
	name       string
	entry, end uint64
}

// Go's assembly functions that switch stacks or start one, by their
// pclntab names, for tables without function flags (Go 1.16/1.17); from
// Go 1.18 on, FlagTopFrame and FlagSPWrite say the same.
var goSPWriteFuncs = map[string]bool{
	"runtime.rt0_go": true, "runtime.mstart": true, "runtime.goexit": true,
	"runtime.mcall": true, "runtime.morestack": true, "runtime.systemstack": true,
	"runtime.asmcgocall": true, "runtime.cgocallback": true, "gogo": true,
	"runtime.gogo": true, "runtime.clone": true, "runtime.sigtramp": true,
	"runtime.nanotime1": true, "runtime.walltime": true, "runtime.walltime1": true,
	"runtime.vgetrandom1": true, "time.now": true,
}

// symbolName returns the ELF symbol name of a pclntab function: the
// pclntab names assembly functions without their ABI suffix.
func symbolName(name string) string {
	for _, n := range []string{name + ".abi0", name} {
		if endOfStackSymbols[n] || stackSwitchFuncs[n] {
			return n
		}
	}
	return name
}

// goRows replaces the rows of the Go functions of f (amd64) with rows
// from Go's pclntab: the SP delta of every PC (pcsp) gives CFA = SP +
// delta + 8, the return address at CFA-8, and the caller's FP at CFA-16
// once the function has saved it (see goFrameSave). It returns the
// functions, for applySymbols, or nil when f has no usable pclntab.
func (b *builder) goRows(f *elf.File) ([]goFunc, error) {
	tab, err := gopclntab.OpenFuncs(f, b.r)
	if errors.Is(err, gopclntab.ErrNotGo) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("unwinder: %w", err)
	}
	if tab.NumFuncs() == 0 {
		return nil, nil
	}
	text := f.Section(".text")
	var code []byte
	if text != nil && text.Type != elf.SHT_NOBITS {
		if code, err = b.section(text, maxSection); err != nil {
			return nil, fmt.Errorf("unwinder: reading .text: %w", err)
		}
	}
	codeAt := func(lo, hi uint64) []byte {
		if text == nil || lo < text.Addr || hi > text.Addr+uint64(len(code)) || lo > hi {
			return nil
		}
		return code[lo-text.Addr : hi-text.Addr]
	}
	flags := tab.HasFuncFlags()
	var (
		rows   []uint64 // encoded, sorted by PC
		funcs  []goFunc
		sp     []gopclntab.SPDelta
		lo, hi uint64 // the range the Go rows cover
	)
	add := func(r Row) {
		v := r.encode()
		if n := len(rows); n > 0 {
			if rows[n-1]>>32 == v>>32 {
				return
			}
			if uint32(rows[n-1]) == uint32(v) {
				rows[n-1] = v
				return
			}
		}
		rows = append(rows, v)
	}
	for fn, err := range tab.Funcs() {
		if fn.End == 0 && err != nil {
			return nil, fmt.Errorf("unwinder: %w", err) // the function table itself
		}
		if fn.End > 0xffffffff {
			return nil, fmt.Errorf("unwinder: Go function at %#x..%#x beyond the 4 GiB the table format addresses", fn.Entry, fn.End)
		}
		if len(funcs) == 0 {
			lo = fn.Entry
		}
		hi = fn.End
		if err == nil {
			sp, err = tab.AppendSP(sp[:0], &fn)
		}
		if err != nil {
			b.unsupported["malformed Go function: "+formatClass(err)]++
			add(Row{PC: fn.Entry, Kind: KindUnsupported})
			continue
		}
		name := symbolName(fn.Name)
		if name != fn.Name && fn.Flag&gopclntab.FlagAsm == 0 && flags {
			// The Go-ABI wrapper of an assembly function, under the
			// same pclntab name: not the function the tables mean.
			name = fn.Name
		}
		if name != fn.Name || endOfStackSymbols[name] || stackSwitchFuncs[name] {
			funcs = append(funcs, goFunc{name: name, entry: fn.Entry, end: fn.End})
		}
		b.goFuncRows(fn, name, flags, sp, codeAt(fn.Entry, fn.End), add)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	b.overlay(lo, hi, rows)
	return funcs, nil
}

func formatClass(err error) string {
	var fe *gopclntab.FormatError
	if errors.As(err, &fe) {
		if i := strings.IndexAny(fe.Msg, "0123456789"); i > 0 {
			return strings.TrimSpace(fe.Msg[:i]) // without the numbers
		}
		return fe.Msg
	}
	return err.Error()
}

// goFuncRows adds the rows of one Go function. flags says whether the
// table has function flags (Go 1.18+); without them, goSPWriteFuncs names
// the functions that write SP.
func (b *builder) goFuncRows(fn gopclntab.Func, name string, flags bool, sp []gopclntab.SPDelta, code []byte, add func(Row)) {
	spwrite := fn.Flag&gopclntab.FlagSPWrite != 0 || !flags && goSPWriteFuncs[fn.Name]
	switch {
	case fn.Flag&gopclntab.FlagTopFrame != 0 || endOfStackSymbols[name]:
		add(Row{PC: fn.Entry, Kind: KindEndOfStack})
		return
	case len(sp) == 0:
		b.unsupported["Go function without SP deltas"]++
		add(Row{PC: fn.Entry, Kind: KindUnsupported})
		return
	case spwrite && !stackSwitchFuncs[name]:
		// Its SP may be on another stack, or made up: Go's own traceback
		// stops at such functions too.
		add(Row{PC: fn.Entry, Kind: KindEndOfStack})
		return
	}
	save, ok := goFrameSave(fn.Entry, sp, code)
	if spwrite {
		// A stack switch function: only with the frame record prologue
		// "PUSHQ BP; MOVQ SP, BP" can its caller be found.
		if i := save - fn.Entry; save == 0 || i+3 > uint64(len(code)) || code[i] != 0x48 || code[i+1] != 0x89 || code[i+2] != 0xe5 {
			add(Row{PC: fn.Entry, Kind: KindEndOfStack})
			return
		}
	}
	if !ok {
		b.unsupported["Go function saving no frame pointer where expected"]++
		add(Row{PC: fn.Entry, Kind: KindUnsupported})
		return
	}
	// The rules change where FP is saved and, in a stack switch
	// function, where FP is the frame record (after "MOVQ SP, BP").
	cuts := []uint64{save}
	if spwrite {
		cuts = append(cuts, save+3)
	}
	for _, d := range sp {
		pcs := [][2]uint64{{d.Lo, d.Hi}}
		for _, c := range cuts {
			if last := pcs[len(pcs)-1]; c > last[0] && c < last[1] {
				pcs = append(pcs[:len(pcs)-1], [2]uint64{last[0], c}, [2]uint64{c, last[1]})
			}
		}
		for _, rg := range pcs {
			r := Row{PC: rg[0], Kind: KindCFA, CFAReg: RegSP, RAOffset: -8}
			off := int64(d.Delta) + 8
			switch {
			case d.Delta < 0:
				b.unsupported["negative Go SP delta"]++
				r = Row{PC: rg[0], Kind: KindUnsupported}
			case off > maxCFAOffset:
				b.unsupported["CFA offset out of range"]++
				r = Row{PC: rg[0], Kind: KindUnsupported}
			case spwrite && save != 0 && rg[0] >= save+3 && d.Delta >= 8:
				// A stack switch function (stackSwitchFuncs) after
				// its "PUSHQ BP; MOVQ SP, BP": SP may be on the system
				// stack (after the switch, in the function itself or
				// in its callee there), BP is the frame record on the
				// goroutine stack, and the caller's SP need not be
				// above the stopped SP.
				r = Row{PC: rg[0], Kind: KindStackSwitch}
			default:
				r.CFAOffset = int32(off)
				if save != 0 && rg[0] >= save && d.Delta >= 8 {
					r.FPOffset = -16
				}
			}
			add(r)
		}
	}
	if last := sp[len(sp)-1].Hi; last < fn.End {
		add(Row{PC: last, Kind: KindUnsupported}) // padding, or a short table
	}
}

// goFrameSave returns the first PC at which a Go function (amd64) has
// saved its caller's FP at CFA-16, 0 for a function that never changes FP
// (a frameless leaf), and false when it cannot tell. Go's amd64 frames
// have two prologues:
//
//	Go 1.21+:   PUSHQ BP; MOVQ SP, BP; SUBQ $n, SP     (saved from the PUSHQ on: SP delta 8)
//	Go <=1.20:  SUBQ $n, SP; MOVQ BP, n-8(SP); LEAQ n-8(SP), BP
//
// and epilogues that restore BP before (or as) SP goes back to the entry
// value, so while the SP delta is 8 or more after the save, the saved FP
// is at CFA-16; at delta 0, FP is the caller's.
func goFrameSave(entry uint64, sp []gopclntab.SPDelta, code []byte) (uint64, bool) {
	for _, d := range sp {
		if d.Delta == 0 {
			continue
		}
		i := d.Lo - entry // the instruction after the one that moved SP
		if i == 0 || i > uint64(len(code)) {
			return 0, false
		}
		if d.Delta == 8 && code[i-1] == 0x55 { // PUSHQ BP
			return d.Lo, true
		}
		// MOVQ BP, disp8(SP) (48 89 6c 24 d8) or disp32(SP) (48 89 ac 24 d32).
		c := code[i:]
		disp := uint64(d.Delta) - 8
		switch {
		case len(c) >= 5 && c[0] == 0x48 && c[1] == 0x89 && c[2] == 0x6c && c[3] == 0x24 && disp < 0x80 && uint64(c[4]) == disp:
			return d.Lo + 5, true
		case len(c) >= 8 && c[0] == 0x48 && c[1] == 0x89 && c[2] == 0xac && c[3] == 0x24 &&
			uint64(c[4])|uint64(c[5])<<8|uint64(c[6])<<16|uint64(c[7])<<24 == disp:
			return d.Lo + 8, true
		}
		return 0, false
	}
	return 0, true
}

// overlay replaces the rows in [lo, hi) with rows (sorted, all in [lo,
// hi)), keeping the rule in force at hi after it.
func (b *builder) overlay(lo, hi uint64, rows []uint64) {
	var out []uint64
	i := 0
	for ; i < len(b.rows) && uint64(uint32(b.rows[i])) < lo; i++ {
		out = append(out, b.rows[i])
	}
	out = append(out, rows...)
	after := Row{PC: hi, Kind: KindUnsupported}.encode()
	if i > 0 {
		after = b.rows[i-1]&^0xffffffff | hi
	}
	for ; i < len(b.rows) && uint64(uint32(b.rows[i])) <= hi; i++ {
		after = b.rows[i]&^0xffffffff | hi
	}
	out = append(out, after)
	b.rows = append(out, b.rows[i:]...)
}
