// Package cfi parses DWARF call frame information as found in the ELF
// sections .eh_frame and .debug_frame, and interprets the CFA programs of its
// FDEs into rows of unwind rules.
//
// The format is described in DWARF 5 §6.4 and, for .eh_frame, in the Linux
// Standard Base (Core, "Exception Frames"). The parser is written for hostile
// input: every length is checked against the section, every error says what
// was malformed and at which section offset, and sizes are capped.
package cfi

import (
	"encoding/binary"
	"fmt"
)

// Limits applied to hostile input.
const (
	MaxSectionSize = 1 << 30 // bytes of one CFI section
	maxStateStack  = 64      // nesting of DW_CFA_remember_state
	maxAugData     = 1 << 16 // bytes of augmentation data
)

// A FormatError reports malformed CFI.
type FormatError struct {
	Section string // ".eh_frame" or ".debug_frame"
	Off     int    // offset in the section of the malformed item
	Msg     string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("cfi: %s at offset %#x: %s", e.Section, e.Off, e.Msg)
}

// Section is one CFI section to parse.
type Section struct {
	Name     string // for error messages
	Data     []byte
	Addr     uint64 // virtual address of Data[0] (for pcrel pointers)
	EH       bool   // .eh_frame format (as opposed to .debug_frame)
	PtrSize  int    // 4 or 8
	Order    binary.ByteOrder
	TextBase uint64 // base for DW_EH_PE_textrel
	DataBase uint64 // base for DW_EH_PE_datarel (the GOT on x86)
}

// CIE is a Common Information Entry.
type CIE struct {
	Off          int // section offset
	Version      uint8
	Augmentation string
	CodeAlign    uint64
	DataAlign    int64
	RAReg        uint64
	FDEEncoding  uint8 // DW_EH_PE_* of FDE addresses
	LSDAEncoding uint8
	Personality  uint64
	SignalFrame  bool // 'S' augmentation: the FDE describes a signal trampoline
	Initial      []byte
	hasZ         bool
}

// FDE is a Frame Description Entry.
type FDE struct {
	Off          int // section offset
	CIE          *CIE
	Begin, End   uint64 // covered PCs [Begin, End)
	Instructions []byte
	sec          *Section
}

// Pointer encodings (DW_EH_PE_*).
const (
	peAbsptr  = 0x00
	peULEB128 = 0x01
	peUData2  = 0x02
	peUData4  = 0x03
	peUData8  = 0x04
	peSLEB128 = 0x09
	peSData2  = 0x0a
	peSData4  = 0x0b
	peSData8  = 0x0c
	pePCRel   = 0x10
	peTextRel = 0x20
	peDataRel = 0x30
	peFuncRel = 0x40
	peAligned = 0x50
	peInd     = 0x80
	peOmit    = 0xff
)

// reader is a bounds-checked cursor over a section.
type reader struct {
	sec *Section
	b   []byte
	off int // offset of b[0] in the section
	pos int
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = &FormatError{Section: r.sec.Name, Off: r.off + r.pos, Msg: fmt.Sprintf(format, args...)}
	}
	r.pos = len(r.b)
}

func (r *reader) left() int { return len(r.b) - r.pos }

func (r *reader) bytes(n int, what string) []byte {
	if n < 0 || r.left() < n {
		r.fail("%s: need %d bytes, have %d", what, n, r.left())
		return nil
	}
	b := r.b[r.pos : r.pos+n]
	r.pos += n
	return b
}

func (r *reader) u8(what string) uint8 {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) u16(what string) uint16 {
	b := r.bytes(2, what)
	if b == nil {
		return 0
	}
	return r.sec.Order.Uint16(b)
}

func (r *reader) u32(what string) uint32 {
	b := r.bytes(4, what)
	if b == nil {
		return 0
	}
	return r.sec.Order.Uint32(b)
}

func (r *reader) u64(what string) uint64 {
	b := r.bytes(8, what)
	if b == nil {
		return 0
	}
	return r.sec.Order.Uint64(b)
}

func (r *reader) uleb(what string) uint64 {
	var v uint64
	var shift uint
	for {
		if r.left() == 0 {
			r.fail("%s: truncated LEB128", what)
			return 0
		}
		c := r.b[r.pos]
		r.pos++
		if shift < 64 {
			v |= uint64(c&0x7f) << shift
		} else if c&0x7f != 0 {
			r.fail("%s: LEB128 overflows 64 bits", what)
			return 0
		}
		shift += 7
		if c&0x80 == 0 {
			return v
		}
	}
}

func (r *reader) sleb(what string) int64 {
	var v int64
	var shift uint
	for {
		if r.left() == 0 {
			r.fail("%s: truncated LEB128", what)
			return 0
		}
		c := r.b[r.pos]
		r.pos++
		if shift < 64 {
			v |= int64(c&0x7f) << shift
		} else if c&0x7f != 0 && c&0x7f != 0x7f {
			r.fail("%s: LEB128 overflows 64 bits", what)
			return 0
		}
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

// addr is the virtual address of the cursor.
func (r *reader) addr() uint64 { return r.sec.Addr + uint64(r.off+r.pos) }

// ptr reads a pointer encoded with enc (DW_EH_PE_*). Indirect pointers
// cannot be resolved without process memory and are rejected.
func (r *reader) ptr(enc uint8, funcBase uint64, what string) uint64 {
	if enc == peOmit {
		return 0
	}
	if enc&peInd != 0 {
		r.fail("%s: indirect pointer encoding %#x not supported", what, enc)
		return 0
	}
	var base uint64
	switch enc & 0x70 {
	case peAbsptr:
	case pePCRel:
		base = r.addr()
	case peTextRel:
		base = r.sec.TextBase
	case peDataRel:
		base = r.sec.DataBase
	case peFuncRel:
		base = funcBase
	case peAligned:
		a := r.sec.PtrSize
		if m := r.pos % a; m != 0 {
			r.bytes(a-m, what)
		}
	default:
		r.fail("%s: unknown pointer application %#x", what, enc&0x70)
		return 0
	}
	var v uint64
	switch enc & 0x0f {
	case peAbsptr:
		if r.sec.PtrSize == 4 {
			v = uint64(r.u32(what))
		} else {
			v = r.u64(what)
		}
	case peULEB128:
		v = r.uleb(what)
	case peUData2:
		v = uint64(r.u16(what))
	case peUData4:
		v = uint64(r.u32(what))
	case peUData8:
		v = r.u64(what)
	case peSLEB128:
		v = uint64(r.sleb(what))
	case peSData2:
		v = uint64(int64(int16(r.u16(what))))
	case peSData4:
		v = uint64(int64(int32(r.u32(what))))
	case peSData8:
		v = r.u64(what)
	default:
		r.fail("%s: unknown pointer format %#x", what, enc&0x0f)
		return 0
	}
	v += base
	if r.sec.PtrSize == 4 {
		v &= 0xffffffff
	}
	return v
}

// Parse returns the FDEs of sec in section order. FDEs whose CIE cannot be
// parsed make Parse fail; Parse never returns a partial result with a nil
// error.
func Parse(sec *Section) ([]*FDE, error) {
	if len(sec.Data) > MaxSectionSize {
		return nil, &FormatError{Section: sec.Name, Msg: fmt.Sprintf("section is %d bytes, limit %d", len(sec.Data), MaxSectionSize)}
	}
	if sec.PtrSize != 4 && sec.PtrSize != 8 {
		return nil, &FormatError{Section: sec.Name, Msg: fmt.Sprintf("unsupported pointer size %d", sec.PtrSize)}
	}
	cies := make(map[int]*CIE)
	var fdes []*FDE
	off := 0
	for off < len(sec.Data) {
		r := &reader{sec: sec, b: sec.Data, pos: off}
		start := off
		length := uint64(r.u32("entry length"))
		dwarf64 := false
		if length == 0xffffffff {
			length = r.u64("64-bit entry length")
			dwarf64 = true
		}
		if r.err != nil {
			return nil, r.err
		}
		if length == 0 {
			if sec.EH {
				break // zero terminator
			}
			off = r.pos
			continue
		}
		if length > uint64(r.left()) {
			return nil, &FormatError{sec.Name, start, fmt.Sprintf("entry length %d exceeds the %d bytes left", length, r.left())}
		}
		body := r.pos
		end := body + int(length)
		e := &reader{sec: sec, b: sec.Data[:end], off: 0, pos: body}
		idPos := e.pos
		var id uint64
		if dwarf64 {
			id = e.u64("CIE id")
		} else {
			id = uint64(e.u32("CIE id"))
		}
		isCIE := (sec.EH && id == 0) || (!sec.EH && (id == 0xffffffff || (dwarf64 && id == ^uint64(0))))
		if isCIE {
			cie, err := parseCIE(e, start)
			if err != nil {
				return nil, err
			}
			cies[start] = cie
		} else {
			var cieOff int
			if sec.EH {
				// Relative to the CIE pointer field itself.
				if id > uint64(idPos) {
					return nil, &FormatError{sec.Name, start, fmt.Sprintf("CIE pointer %#x points before the section", id)}
				}
				cieOff = idPos - int(id)
			} else {
				if id >= uint64(len(sec.Data)) {
					return nil, &FormatError{sec.Name, start, fmt.Sprintf("CIE pointer %#x outside the section", id)}
				}
				cieOff = int(id)
			}
			cie := cies[cieOff]
			if cie == nil {
				// CIEs normally precede their FDEs; tolerate a forward reference.
				var err error
				cie, err = parseCIEAt(sec, cieOff)
				if err != nil {
					return nil, err
				}
				cies[cieOff] = cie
			}
			fde, err := parseFDE(e, start, cie)
			if err != nil {
				return nil, err
			}
			fdes = append(fdes, fde)
		}
		off = end
	}
	return fdes, nil
}

func parseCIEAt(sec *Section, off int) (*CIE, error) {
	r := &reader{sec: sec, b: sec.Data, pos: off}
	length := uint64(r.u32("CIE length"))
	dwarf64 := length == 0xffffffff
	if dwarf64 {
		length = r.u64("CIE length")
	}
	if r.err != nil {
		return nil, r.err
	}
	if length == 0 || length > uint64(r.left()) {
		return nil, &FormatError{sec.Name, off, fmt.Sprintf("FDE refers to a CIE with bad length %d", length)}
	}
	e := &reader{sec: sec, b: sec.Data[:r.pos+int(length)], pos: r.pos}
	var id uint64
	if dwarf64 {
		id = e.u64("CIE id")
	} else {
		id = uint64(e.u32("CIE id"))
	}
	if (sec.EH && id != 0) || (!sec.EH && id != 0xffffffff && id != ^uint64(0)) {
		return nil, &FormatError{sec.Name, off, "FDE's CIE pointer does not point to a CIE"}
	}
	return parseCIE(e, off)
}

func parseCIE(r *reader, off int) (*CIE, error) {
	c := &CIE{Off: off, FDEEncoding: peAbsptr, LSDAEncoding: peOmit}
	c.Version = r.u8("CIE version")
	if r.err == nil && c.Version != 1 && c.Version != 3 && c.Version != 4 {
		return nil, &FormatError{r.sec.Name, off, fmt.Sprintf("unsupported CIE version %d", c.Version)}
	}
	augStart := r.pos
	for r.left() > 0 && r.b[r.pos] != 0 {
		r.pos++
	}
	c.Augmentation = string(r.b[augStart:r.pos])
	r.u8("augmentation terminator")
	if c.Version == 4 {
		if as := r.u8("address size"); r.err == nil && int(as) != r.sec.PtrSize {
			return nil, &FormatError{r.sec.Name, off, fmt.Sprintf("CIE address size %d, expected %d", as, r.sec.PtrSize)}
		}
		if ss := r.u8("segment selector size"); r.err == nil && ss != 0 {
			return nil, &FormatError{r.sec.Name, off, fmt.Sprintf("segmented addresses (selector size %d) not supported", ss)}
		}
	}
	if c.Augmentation == "eh" {
		// Ancient GCC: an exception table pointer follows.
		r.bytes(r.sec.PtrSize, "eh augmentation pointer")
	}
	c.CodeAlign = r.uleb("code alignment factor")
	c.DataAlign = r.sleb("data alignment factor")
	if c.Version == 1 {
		c.RAReg = uint64(r.u8("return address register"))
	} else {
		c.RAReg = r.uleb("return address register")
	}
	if r.err != nil {
		return nil, r.err
	}
	aug := c.Augmentation
	if len(aug) > 0 && aug[0] == 'z' {
		c.hasZ = true
		n := r.uleb("augmentation data length")
		if n > maxAugData || n > uint64(r.left()) {
			return nil, &FormatError{r.sec.Name, r.off + r.pos, fmt.Sprintf("augmentation data length %d too large", n)}
		}
		augEnd := r.pos + int(n)
		for _, ch := range aug[1:] {
			switch ch {
			case 'R':
				c.FDEEncoding = r.u8("FDE pointer encoding")
			case 'L':
				c.LSDAEncoding = r.u8("LSDA pointer encoding")
			case 'P':
				enc := r.u8("personality encoding")
				c.Personality = r.ptr(enc&^peInd, 0, "personality pointer")
			case 'S':
				c.SignalFrame = true
			case 'B', 'G':
				// AArch64 BTI / MTE tagged frames: no data.
			default:
				// Unknown augmentation: the length lets us skip its data.
				r.pos = augEnd
			}
			if r.err != nil {
				return nil, r.err
			}
		}
		if r.pos > augEnd {
			return nil, &FormatError{r.sec.Name, r.off + augEnd, "augmentation data overruns its length"}
		}
		r.pos = augEnd
	} else if aug != "" && aug != "eh" {
		return nil, &FormatError{r.sec.Name, off, fmt.Sprintf("unknown augmentation %q without 'z'", aug)}
	}
	if r.err != nil {
		return nil, r.err
	}
	c.Initial = r.b[r.pos:]
	return c, nil
}

func parseFDE(r *reader, off int, cie *CIE) (*FDE, error) {
	f := &FDE{Off: off, CIE: cie, sec: r.sec}
	enc := cie.FDEEncoding
	if !r.sec.EH {
		enc = peAbsptr
	}
	f.Begin = r.ptr(enc, 0, "FDE initial location")
	n := r.ptr(enc&0x0f, 0, "FDE address range")
	if r.err != nil {
		return nil, r.err
	}
	f.End = f.Begin + n
	if f.End < f.Begin {
		return nil, &FormatError{r.sec.Name, off, fmt.Sprintf("FDE range %#x+%#x overflows", f.Begin, n)}
	}
	if cie.hasZ {
		l := r.uleb("FDE augmentation length")
		r.bytes(int(min(l, uint64(maxAugData+1))), "FDE augmentation data")
		if l > maxAugData {
			r.fail("FDE augmentation data length %d too large", l)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	f.Instructions = r.b[r.pos:]
	return f, nil
}
