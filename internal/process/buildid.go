package process

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"io"
)

// Note types, in the namespace of their owner.
const (
	ntGNUBuildID = 3 // NT_GNU_BUILD_ID, owner "GNU"
	ntGoBuildID  = 4 // owner "Go"
)

const (
	// maxNoteBlock bounds one note section or segment that is read.
	maxNoteBlock = 64 << 10
	// maxNoteBytes bounds the note bytes read from one file.
	maxNoteBytes = 256 << 10
	// maxIDBytes bounds a build id: GNU ids are 16 or 20 bytes (a few
	// more with --build-id=0xHEX), Go's are about 80 characters.
	maxIDBytes = 1024
)

// BuildID returns the hex GNU build id of f (the NT_GNU_BUILD_ID note of a
// note section, else of a PT_NOTE segment, so that files without section
// headers have one too), or "" when it has none or its notes are
// malformed.
func BuildID(f *elf.File) string {
	return hex.EncodeToString(findNote(f, "GNU", ntGNUBuildID))
}

// GoBuildID returns the Go build id of f (the note of owner "Go" and type
// 4 the Go linker writes, in .note.go.buildid), or "" when it has none.
// Go binaries have no GNU build id unless linked with -B; pprof names them
// by this one.
func GoBuildID(f *elf.File) string {
	return string(findNote(f, "Go", ntGoBuildID))
}

// NotesBuildID returns the hex GNU build id in notes, a sequence of ELF
// notes such as /sys/kernel/notes or /sys/module/M/notes/.note.gnu.build-id
// (in the running kernel's byte order, binary.NativeEndian), or "".
func NotesBuildID(notes []byte, bo binary.ByteOrder) string {
	return hex.EncodeToString(noteDesc(notes, bo, 4, "GNU", ntGNUBuildID))
}

// findNote returns the descriptor of the first note of owner and type typ
// in f's note sections, else in its PT_NOTE segments.
func findNote(f *elf.File, owner string, typ uint32) []byte {
	budget := maxNoteBytes
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE || s.Flags&elf.SHF_COMPRESSED != 0 {
			continue
		}
		if d := readNotes(s.Open(), s.Size, s.Addralign, f.ByteOrder, &budget, owner, typ); d != nil {
			return d
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if d := readNotes(p.Open(), p.Filesz, p.Align, f.ByteOrder, &budget, owner, typ); d != nil {
			return d
		}
	}
	return nil
}

// readNotes reads size bytes of notes from r, within *budget, and looks
// for the note of owner and type typ.
func readNotes(r io.Reader, size, align uint64, bo binary.ByteOrder, budget *int, owner string, typ uint32) []byte {
	if size == 0 || size > maxNoteBlock || size > uint64(*budget) {
		return nil
	}
	*budget -= int(size)
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil
	}
	return noteDesc(data, bo, align, owner, typ)
}

// noteDesc returns the descriptor of the first note of owner and type typ
// in data, a sequence of ELF notes (namesz, descsz, type, then the name and
// the descriptor, each padded to align: 8 in 8-aligned note blocks, else
// 4), or nil. It stops at the first note that does not fit in data.
func noteDesc(data []byte, bo binary.ByteOrder, align uint64, owner string, typ uint32) []byte {
	if align != 8 {
		align = 4
	}
	pad := func(n uint64) uint64 { return (n + align - 1) &^ (align - 1) }
	for uint64(len(data)) >= 12 {
		namesz, descsz, t := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		rest := uint64(len(data)) - 12
		// namesz and descsz are at most 2^32-1: the sums cannot overflow.
		nameEnd := pad(12+namesz) - 12
		if nameEnd > rest || nameEnd+descsz > rest {
			return nil
		}
		body := data[12:]
		name := bytes.TrimRight(body[:namesz], "\x00") // Go pads its "Go" with two
		if t == typ && string(name) == owner && descsz > 0 && descsz <= maxIDBytes {
			return body[nameEnd : nameEnd+descsz : nameEnd+descsz]
		}
		next := pad(12+nameEnd+descsz) - 12
		if next >= rest {
			return nil
		}
		data = body[next:]
	}
	return nil
}
