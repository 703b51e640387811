package gopclntab

import (
	"encoding/binary"
	"fmt"
	"iter"
	"runtime"
)

// FuncFlag holds the runtime's flags of a function (abi.FuncFlag).
type FuncFlag uint8

const (
	// FlagTopFrame: the function is the outermost frame of a stack
	// (runtime.goexit, runtime.rt0_go, runtime.mstart, ...).
	FlagTopFrame FuncFlag = 1 << 0
	// FlagSPWrite: the function writes SP other than by its frame
	// adjustments (stack switches): its SP delta is not trustworthy.
	FlagSPWrite FuncFlag = 1 << 1
	// FlagAsm: the function is written in assembly (Go 1.20+).
	FlagAsm FuncFlag = 1 << 2
)

// Func is one function of the table.
type Func struct {
	Entry, End uint64 // [Entry, End); End is the next function's entry
	Name       string
	// Flag is known for Go 1.18+ tables; 0 for Go 1.16/1.17.
	Flag FuncFlag

	pcsp uint32 // offset in pctab
	off  uint64 // of the _func record in the section, for errors
}

// SPDelta says that at the PCs [Lo, Hi) of a function, SP is Delta bytes
// below its value at the function's entry (where it points to the return
// address on amd64). Delta is negative in the few assembly functions that
// pop their return address (syscall.rawVforkSyscall).
type SPDelta struct {
	Lo, Hi uint64
	Delta  int32
}

// FormatError is a malformed part of the table.
type FormatError struct {
	Off  uint64 // byte offset in the section
	Func string // the function concerned, when known
	Msg  string
}

func (e *FormatError) Error() string {
	if e.Func != "" {
		return fmt.Sprintf("gopclntab: %s at offset %#x (function %s)", e.Msg, e.Off, e.Func)
	}
	return fmt.Sprintf("gopclntab: %s at offset %#x", e.Msg, e.Off)
}

// maxSPDelta bounds SP deltas to what an int32 holds (runtime.call1073741824
// has a frame of 1 GiB).
const maxSPDelta = 1<<31 - 1

// parse116 reads what Funcs needs from a Go 1.16/1.17 table: a header of
// magic, pad, quantum, pointer size, then nfunc, nfiles, and the offsets
// of funcnametab, cutab, filetab, pctab and pclntable (pointer sized); the
// function table is nfunc+1 (entry PC, _func offset) pointer pairs at the
// start of pclntable.
func (t *Table) parse116(data []byte) error {
	ps := uint64(t.ptrSize)
	if uint64(len(data)) < 8+7*ps {
		return &FormatError{Off: 8, Msg: fmt.Sprintf("header of %d bytes is too short", len(data))}
	}
	word := func(i uint64) uint64 {
		if ps == 4 {
			return uint64(t.bo.Uint32(data[8+i*4:]))
		}
		return t.bo.Uint64(data[8+i*8:])
	}
	nfunc, names, pctab, pcln := word(0), word(2), word(5), word(6)
	size := uint64(len(data))
	if names > size || pctab > pcln || pcln > size {
		return &FormatError{Off: 8, Msg: fmt.Sprintf("table offsets funcnametab %#x, pctab %#x, pclntable %#x outside the %d byte table", names, pctab, pcln, size)}
	}
	if nfunc > size || (nfunc+1)*2*ps > size-pcln {
		return &FormatError{Off: pcln, Msg: fmt.Sprintf("%d functions do not fit the %d byte function table", nfunc, size-pcln)}
	}
	t.v116 = true
	t.nfunc = int(nfunc)
	t.funcnames = data[names:] // names are NUL-terminated within
	t.pctab, t.pctabOff = data[pctab:pcln], pctab
	t.pcln, t.pclnOff = data[pcln:], pcln
	t.functab = t.pcln[:(nfunc+1)*2*ps]
	return nil
}

// NumFuncs returns the number of functions Funcs yields: 0 for tables of
// Go before 1.16, whose function records Funcs does not read.
func (t *Table) NumFuncs() int {
	if t.functab == nil {
		return 0
	}
	return t.nfunc
}

// HasFuncFlags reports whether the functions Funcs yields carry their
// flags (Go 1.18+): Func.Flag 0 then means no flag rather than unknown.
func (t *Table) HasFuncFlags() bool { return !t.v116 }

// Funcs yields the functions of the table in address order. A malformed
// function record yields its error (a *FormatError) with the function's
// bounds when they are known, and the iteration goes on with the next one;
// function bounds out of order end it.
func (t *Table) Funcs() iter.Seq2[Func, error] {
	return func(yield func(Func, error) bool) {
		defer runtime.KeepAlive(t)
		if t.functab == nil {
			if t.old != nil {
				yield(Func{}, &FormatError{Msg: "function records of a pclntab older than Go 1.16 are not read"})
			}
			return
		}
		prev := uint64(0)
		for i := 0; i < t.nfunc; i++ {
			entry, funcOff := t.functabEntry(i)
			end, _ := t.functabEntry(i + 1)
			if entry < prev || end < entry {
				yield(Func{}, &FormatError{Off: t.pclnOff + uint64(i)*t.functabStride(), Msg: fmt.Sprintf("function %d of %d spans %#x..%#x, out of address order", i, t.nfunc, entry, end)})
				return
			}
			prev = entry
			f, err := t.funcRecord(entry, end, funcOff)
			if !yield(f, err) {
				return
			}
		}
	}
}

func (t *Table) functabStride() uint64 {
	if t.v116 {
		return 2 * uint64(t.ptrSize)
	}
	return 8
}

// functabEntry returns the entry PC and _func offset of function i (i ==
// nfunc: the end of the last function).
func (t *Table) functabEntry(i int) (entry, funcOff uint64) {
	if !t.v116 {
		if i == t.nfunc { // only the end's entry offset is kept
			return t.textStart + uint64(t.bo.Uint32(t.functab[i*8:])), 0
		}
		return t.textStart + uint64(t.bo.Uint32(t.functab[i*8:])), uint64(t.bo.Uint32(t.functab[i*8+4:]))
	}
	if t.ptrSize == 4 {
		return uint64(t.bo.Uint32(t.functab[i*8:])), uint64(t.bo.Uint32(t.functab[i*8+4:]))
	}
	return t.bo.Uint64(t.functab[i*16:]), t.bo.Uint64(t.functab[i*16+8:])
}

// funcRecord decodes the _func record at funcOff in pcln:
//
//	Go 1.16/1.17: entry uintptr, nameoff, args, deferreturn, pcsp, ...; funcID, flag (1.17) at 28+ptrsize
//	Go 1.18/1.19: entryoff u32, nameoff, args, deferreturn, pcsp, ...; funcID at 36, flag at 37
//	Go 1.20+:     the same with startLine at 36: funcID at 40, flag at 41
func (t *Table) funcRecord(entry, end, funcOff uint64) (Func, error) {
	f := Func{Entry: entry, End: end, off: t.pclnOff + funcOff}
	base, flagAt, size := uint64(0), uint64(37), uint64(40)
	switch {
	case t.v116:
		base, flagAt, size = uint64(t.ptrSize)-4, 0, uint64(t.ptrSize)+36
	case t.go120:
		flagAt, size = 41, 44
	}
	if funcOff > uint64(len(t.pcln)) || uint64(len(t.pcln))-funcOff < size {
		return f, &FormatError{Off: f.off, Msg: fmt.Sprintf("function record at %#x..%#x outside the %d byte function table", funcOff, funcOff+size, len(t.pcln))}
	}
	r := t.pcln[funcOff:]
	if t.v116 {
		var e uint64
		if t.ptrSize == 4 {
			e = uint64(t.bo.Uint32(r))
		} else {
			e = t.bo.Uint64(r)
		}
		if e != entry {
			return f, &FormatError{Off: f.off, Msg: fmt.Sprintf("function record says entry %#x, function table %#x", e, entry)}
		}
	} else if e := t.textStart + uint64(t.bo.Uint32(r)); e != entry {
		return f, &FormatError{Off: f.off, Msg: fmt.Sprintf("function record says entry %#x, function table %#x", e, entry)}
	}
	nameOff := uint64(t.bo.Uint32(r[base+4:]))
	if nameOff >= uint64(len(t.funcnames)) {
		return f, &FormatError{Off: f.off, Msg: fmt.Sprintf("name offset %#x outside the %d byte name table", nameOff, len(t.funcnames))}
	}
	f.Name = string(cstring(t.funcnames, nameOff))
	f.pcsp = t.bo.Uint32(r[base+16:])
	if flagAt != 0 {
		f.Flag = FuncFlag(r[flagAt])
	}
	return f, nil
}

// AppendSP appends the SP deltas of f, decoded from its pcsp table, to
// buf, in address order. They cover f from its entry to where the table
// ends, which is f.End in a well-formed table; a function without a table
// (pcsp offset 0) has none.
func (t *Table) AppendSP(buf []SPDelta, f *Func) ([]SPDelta, error) {
	defer runtime.KeepAlive(t)
	if f.pcsp == 0 {
		return buf, nil
	}
	if uint64(f.pcsp) >= uint64(len(t.pctab)) {
		return buf, &FormatError{Off: f.off, Func: f.Name, Msg: fmt.Sprintf("pcsp offset %#x outside the %d byte pctab", f.pcsp, len(t.pctab))}
	}
	return decodePCSP(buf, t.pctab[f.pcsp:], t.pctabOff+uint64(f.pcsp), f, t.quantum)
}

// decodePCSP decodes a pc-value table (runtime/symtab.go, pcvalue): pairs
// of uvarints, a zig-zag value delta (the first one from -1) and a PC
// delta in units of quantum, ending with a value delta of 0 after the
// first pair. off is p's offset in the section, for errors.
func decodePCSP(buf []SPDelta, p []byte, off uint64, f *Func, quantum uint64) ([]SPDelta, error) {
	bad := func(at int, msg string, args ...any) ([]SPDelta, error) {
		return buf, &FormatError{Off: off + uint64(at), Func: f.Name, Msg: "pcsp table: " + fmt.Sprintf(msg, args...)}
	}
	pc, val := f.Entry, int64(-1)
	for i := 0; ; {
		uv, n := binary.Uvarint(p[i:])
		if n <= 0 || uv > 1<<32-1 {
			return bad(i, "bad value delta varint")
		}
		if uv == 0 && pc != f.Entry {
			return buf, nil
		}
		i += n
		d := int64(-(uv & 1) ^ (uv >> 1))
		val += d
		pcd, n := binary.Uvarint(p[i:])
		if n <= 0 || pcd > 1<<32-1 {
			return bad(i, "bad pc delta varint")
		}
		i += n
		if pcd == 0 {
			return bad(i-n, "empty pc range")
		}
		hi := pc + pcd*quantum
		if hi > f.End || hi < pc {
			return bad(i-n, "pc range %#x..%#x past the function's end %#x", pc, hi, f.End)
		}
		if val < -maxSPDelta || val > maxSPDelta {
			return bad(i-n, "SP delta %d at %#x..%#x out of range", val, pc, hi)
		}
		buf = append(buf, SPDelta{Lo: pc, Hi: hi, Delta: int32(val)})
		pc = hi
	}
}
