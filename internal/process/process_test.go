package process

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// readelfBuildID is the build id readelf -n prints for file.
func readelfBuildID(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command(testenv.RequireTool(t, "readelf"), "-n", file).Output()
	if err != nil {
		t.Fatalf("readelf -n %s: %v", file, err)
	}
	_, rest, ok := bytes.Cut(out, []byte("Build ID: "))
	if !ok {
		t.Fatalf("readelf -n %s prints no build id:\n%s", file, out)
	}
	return string(bytes.Fields(rest)[0])
}

func TestBuildID(t *testing.T) {
	file := testenv.Workload(t, "symtest-c")
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, want := BuildID(f), readelfBuildID(t, file); got != want {
		t.Errorf("BuildID(%s) = %q, readelf -n says %q", file, got, want)
	}
	if id := GoBuildID(f); id != "" {
		t.Errorf("GoBuildID of a C program = %q, want none", id)
	}
}

func TestGoBuildID(t *testing.T) {
	// This test binary, as go tool buildid reads it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "tool", "buildid", exe).Output()
	if err != nil {
		t.Skipf("go tool buildid: %v", err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, want := GoBuildID(f), strings.TrimSpace(string(out)); got != want {
		t.Errorf("GoBuildID = %q, go tool buildid says %q", got, want)
	}
}

// note encodes one ELF note, padded to align.
func note(bo binary.AppendByteOrder, align int, owner string, typ uint32, desc []byte) []byte {
	pad := func(b []byte) []byte {
		for len(b)%align != 0 {
			b = append(b, 0)
		}
		return b
	}
	name := owner + "\x00"
	b := bo.AppendUint32(nil, uint32(len(name)))
	b = bo.AppendUint32(b, uint32(len(desc)))
	b = bo.AppendUint32(b, typ)
	b = pad(append(b, name...))
	return pad(append(b, desc...))
}

// elfWithNotes is a minimal 64-bit little-endian ELF file whose notes are
// in one PT_NOTE segment of the given alignment and, when sections is set,
// in one SHT_NOTE section too.
func elfWithNotes(notes []byte, align uint64, sections bool) []byte {
	le := binary.LittleEndian
	const ehsize, phsize, shsize = 64, 56, 64
	notesOff := uint64(ehsize + phsize)
	shstr := []byte("\x00.note\x00.shstrtab\x00")
	shstrOff := notesOff + uint64(len(notes))
	shOff := shstrOff + uint64(len(shstr))
	b := make([]byte, 0, shOff+3*shsize)
	b = append(b, 0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1, 0)
	b = append(b, make([]byte, 8)...)
	b = le.AppendUint16(b, uint16(elf.ET_DYN))
	b = le.AppendUint16(b, uint16(elf.EM_X86_64))
	b = le.AppendUint32(b, 1)
	b = le.AppendUint64(b, 0)        // entry
	b = le.AppendUint64(b, ehsize)   // phoff
	shoff, shnum := shOff, uint16(3) // section headers
	if !sections {
		shoff, shnum = 0, 0
	}
	b = le.AppendUint64(b, shoff)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint16(b, ehsize)
	b = le.AppendUint16(b, phsize)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, shsize)
	b = le.AppendUint16(b, shnum)
	b = le.AppendUint16(b, min(shnum, 2)) // shstrndx
	// PT_NOTE
	b = le.AppendUint32(b, uint32(elf.PT_NOTE))
	b = le.AppendUint32(b, uint32(elf.PF_R))
	b = le.AppendUint64(b, notesOff)
	b = le.AppendUint64(b, notesOff)
	b = le.AppendUint64(b, notesOff)
	b = le.AppendUint64(b, uint64(len(notes)))
	b = le.AppendUint64(b, uint64(len(notes)))
	b = le.AppendUint64(b, align)
	b = append(b, notes...)
	b = append(b, shstr...)
	sh := func(name uint32, typ elf.SectionType, off, size, align uint64) {
		b = le.AppendUint32(b, name)
		b = le.AppendUint32(b, uint32(typ))
		b = le.AppendUint64(b, 0) // flags
		b = le.AppendUint64(b, 0) // addr
		b = le.AppendUint64(b, off)
		b = le.AppendUint64(b, size)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint64(b, align)
		b = le.AppendUint64(b, 0)
	}
	if sections {
		sh(0, elf.SHT_NULL, 0, 0, 0)
		sh(1, elf.SHT_NOTE, notesOff, uint64(len(notes)), align)
		sh(7, elf.SHT_STRTAB, shstrOff, uint64(len(shstr)), 1)
	}
	return b
}

func TestBuildIDNotes(t *testing.T) {
	le := binary.LittleEndian
	id := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	const want = "deadbeef0102030405060708090a0b0c0d0e0f10"
	property := note(le, 8, "GNU", 5, make([]byte, 12)) // NT_GNU_PROPERTY_TYPE_0, before the id
	tests := []struct {
		name     string
		notes    []byte
		align    uint64
		sections bool
		want     string
	}{
		{"section", note(le, 4, "GNU", 3, id), 4, true, want},
		{"segment only (no section headers)", note(le, 4, "GNU", 3, id), 4, false, want},
		{"8-aligned after a property note", append(property, note(le, 8, "GNU", 3, id)...), 8, false, want},
		{"after a Go note", append(note(le, 4, "Go", 4, []byte("abc/def")), note(le, 4, "GNU", 3, id)...), 4, true, want},
		{"wrong owner", note(le, 4, "GNUX", 3, id), 4, true, ""},
		{"wrong type", note(le, 4, "GNU", 1, id), 4, true, ""},
		{"empty descriptor", note(le, 4, "GNU", 3, nil), 4, true, ""},
		{"truncated", note(le, 4, "GNU", 3, id)[:30], 4, true, ""},
		{"descriptor size past the end", func() []byte {
			n := note(le, 4, "GNU", 3, id)
			le.PutUint32(n[4:], 0xffffffff)
			return n
		}(), 4, true, ""},
		{"name size past the end", func() []byte {
			n := note(le, 4, "GNU", 3, id)
			le.PutUint32(n[0:], 0xfffffffe)
			return n
		}(), 4, false, ""},
	}
	for _, tt := range tests {
		f, err := elf.NewFile(bytes.NewReader(elfWithNotes(tt.notes, tt.align, tt.sections)))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := BuildID(f); got != tt.want {
			t.Errorf("%s: BuildID = %q, want %q", tt.name, got, tt.want)
		}
	}
	f, _ := elf.NewFile(bytes.NewReader(elfWithNotes(append(note(le, 4, "GNU", 3, id), note(le, 4, "Go", 4, []byte("abc/def"))...), 4, true)))
	if got := GoBuildID(f); got != "abc/def" {
		t.Errorf("GoBuildID = %q, want abc/def", got)
	}
	if got := NotesBuildID(note(binary.BigEndian, 4, "GNU", 3, id), binary.BigEndian); got != want {
		t.Errorf("NotesBuildID = %q, want %q", got, want)
	}
}

func FuzzBuildID(f *testing.F) {
	le := binary.LittleEndian
	id := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	f.Add(elfWithNotes(note(le, 4, "GNU", 3, id), 4, true))
	f.Add(elfWithNotes(append(note(le, 8, "GNU", 5, make([]byte, 12)), note(le, 8, "GNU", 3, id)...), 8, false))
	f.Add(elfWithNotes(note(le, 4, "Go", 4, []byte("a/b/c/d")), 4, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ef *elf.File
		if Guard("input", func() (err error) { ef, err = elf.NewFile(bytes.NewReader(data)); return err }) != nil {
			return // debug/elf's business
		}
		id := BuildID(ef)
		if len(id)%2 != 0 || len(id) > 2*maxIDBytes {
			t.Fatalf("BuildID = %q", id)
		}
		if g := GoBuildID(ef); len(g) > maxIDBytes {
			t.Fatalf("GoBuildID of %d bytes", len(g))
		}
		// The raw notes parser on the bytes themselves, both alignments.
		for _, align := range []uint64{4, 8} {
			if d := noteDesc(data, le, align, "GNU", 3); len(d) > len(data) || len(d) > maxIDBytes {
				t.Fatalf("noteDesc returned %d bytes of %d", len(d), len(data))
			}
		}
	})
}

// funcSyms returns the function symbols of f with a size, by name, from
// .symtab, else .dynsym.
func funcSyms(f *elf.File) map[string]elf.Symbol {
	syms, err := f.Symbols()
	if err != nil {
		syms, _ = f.DynamicSymbols()
	}
	out := map[string]elf.Symbol{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 && s.Section != elf.SHN_UNDEF {
			out[s.Name] = s
		}
	}
	return out
}

func TestELFAddrProcess(t *testing.T) {
	// A PIE C program and its shared libraries, mapped by the kernel and
	// the dynamic loader: for each executable mapping, functions of the
	// file (at ELF virtual address V, file offset V - p.Vaddr + p.Off)
	// are at V + Bias(m, TextAdj) in the process, and the bytes there are the
	// file's; ELFAddr of that address is V.
	cmd := testenv.Start(t, testenv.Workload(t, "symtest-c"))
	pid := strconv.Itoa(cmd.Process.Pid)
	procDir := "/proc/" + pid
	mem, err := os.Open(procDir + "/mem")
	if err != nil {
		t.Skipf("cannot read the workload's memory: %v", err)
	}
	defer mem.Close()
	var ms []Mapping
	for range 200 { // until the loader has mapped libc
		ms, err = ReadMaps(procDir)
		if err != nil {
			t.Fatal(err)
		}
		if hasFile(ms, "libc") && hasFile(ms, "symtest-c") {
			break
		}
		runtime.Gosched()
		unix.Nanosleep(&unix.Timespec{Nsec: 10e6}, nil)
	}
	checked := map[string]int{}
	for _, m := range ms {
		if !m.Exec() || m.Anonymous() {
			continue
		}
		f, err := OpenMapped(procDir, m)
		if err != nil {
			t.Fatalf("OpenMapped(%s): %v", m.Path, err)
		}
		ef, err := elf.NewFile(f)
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", m.Path, err)
		}
		var loads []elf.ProgHeader
		for _, p := range ef.Progs {
			loads = append(loads, p.ProgHeader)
		}
		adj, ok := TextAdj(loads)
		if !ok {
			t.Errorf("%s: no TextAdj for %+v", m.Path, loads)
		}
		bias := Bias(m, adj)
		syms := funcSyms(ef)
		for name, s := range syms {
			pc := s.Value + bias
			if pc < m.Start || pc+16 > m.End {
				continue
			}
			var off uint64
			for _, p := range loads {
				if p.Type == elf.PT_LOAD && s.Value >= p.Vaddr && s.Value-p.Vaddr < p.Filesz {
					off = s.Value - p.Vaddr + p.Off
				}
			}
			want := make([]byte, min(16, s.Size))
			got := make([]byte, len(want))
			if _, err := f.ReadAt(want, int64(off)); err != nil {
				t.Fatal(err)
			}
			if _, err := mem.ReadAt(got, int64(pc)); err != nil {
				t.Fatalf("reading %s at %#x: %v", name, pc, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: %s at %#x (bias %#x) holds %x, the file %x", m.Path, name, pc, bias, got, want)
			}
			if v, ok := ELFAddr(loads, m, pc); !ok || v != s.Value {
				t.Errorf("%s: ELFAddr(%#x) = %#x, %v; %s is at %#x", m.Path, pc, v, ok, name, s.Value)
			}
			checked[filepath.Base(m.Path)]++
		}
		f.Close()
	}
	t.Logf("functions checked per file: %v", checked)
	if checked["symtest-c"] < 100 {
		t.Errorf("checked %d functions of symtest-c, want its ~180", checked["symtest-c"])
	}
}

func hasFile(ms []Mapping, substr string) bool {
	for _, m := range ms {
		if m.Exec() && strings.Contains(m.Path, substr) {
			return true
		}
	}
	return false
}

func TestELFAddrSegments(t *testing.T) {
	load := func(flags elf.ProgFlag, off, vaddr, filesz uint64) elf.ProgHeader {
		return elf.ProgHeader{Type: elf.PT_LOAD, Flags: flags, Off: off, Vaddr: vaddr, Filesz: filesz, Memsz: filesz, Align: 0x1000}
	}
	// lld's layout: R, RX and RW segments packed in the file, the RX one
	// a page further in memory; its mapping starts at file offset 0.
	const base = 0x7f0000000000
	lld := []elf.ProgHeader{
		load(elf.PF_R, 0, 0, 0x5a0),
		load(elf.PF_R|elf.PF_X, 0x5a0, 0x15a0, 0x2000),
		load(elf.PF_R|elf.PF_W, 0x25a0, 0x45a0, 0x100),
	}
	lldRX := Mapping{Start: base + 0x1000, End: base + 0x4000, Perm: Read | Exec, Offset: 0}
	// Two executable segments sharing a file page, far apart in memory:
	// the second one's mapping starts at an offset inside the first.
	two := []elf.ProgHeader{
		load(elf.PF_R|elf.PF_X, 0x1000, 0x401000, 0x800),
		load(elf.PF_R|elf.PF_X, 0x1800, 0x602800, 0x1000),
	}
	twoA := Mapping{Start: 0x401000, End: 0x402000, Perm: Read | Exec, Offset: 0x1000}
	twoB := Mapping{Start: 0x602000, End: 0x604000, Perm: Read | Exec, Offset: 0x1000}
	tests := []struct {
		name   string
		loads  []elf.ProgHeader
		m      Mapping
		pc     uint64
		want   uint64
		wantOK bool
	}{
		{"lld RX", lld, lldRX, base + 0x15b0, 0x15b0, true},
		{"lld RX end", lld, lldRX, base + 0x359f, 0x359f, true},
		{"first of two", two, twoA, 0x401010, 0x401010, true},
		{"second of two", two, twoB, 0x602900, 0x602900, true},
		{"second of two, last byte", two, twoB, 0x6037ff, 0x6037ff, true},
		{"outside the mapping", two, twoB, 0x604000, 0, false},
		{"no segment", two[:1], twoB, 0x603000, 0, false},
	}
	for _, tt := range tests {
		got, ok := ELFAddr(tt.loads, tt.m, tt.pc)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: ELFAddr(%#x) = %#x, %v, want %#x, %v", tt.name, tt.pc, got, ok, tt.want, tt.wantOK)
		}
	}
	// The kernel's one number per file: right for every pc of the
	// executable segment, refused for code in two segments at different
	// offsets (one number would convert one of them wrong).
	for _, tt := range []struct {
		name     string
		loads    []elf.ProgHeader
		m        Mapping
		pc, want uint64
	}{
		{"lld RX", lld, lldRX, base + 0x15b0, 0x15b0},
		{"lld RX end", lld, lldRX, base + 0x359f, 0x359f},
		{"one of two", two[:1], twoA, 0x401010, 0x401010},
	} {
		adj, ok := TextAdj(tt.loads)
		if !ok || tt.pc-Bias(tt.m, adj) != tt.want {
			t.Errorf("%s: TextAdj = %#x, %v: pc %#x - Bias = %#x, want %#x", tt.name, adj, ok, tt.pc, tt.pc-Bias(tt.m, adj), tt.want)
		}
	}
	if adj, ok := TextAdj(two); ok {
		t.Errorf("TextAdj of two executable segments at different offsets = %#x, ok", adj)
	}
	if _, ok := TextAdj(lld[:1]); ok {
		t.Errorf("TextAdj of a file with no executable segment: ok")
	}
}

func TestOpenMapped(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ReadMaps("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	var m Mapping
	for _, mm := range ms {
		if mm.Path == exe && mm.Exec() {
			m = mm
		}
	}
	// Through map_files, then, in a directory without it, through root.
	fake := t.TempDir()
	if err := os.Symlink("/", filepath.Join(fake, "root")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"/proc/self", fake} {
		f, err := OpenMapped(dir, m)
		if err != nil {
			t.Errorf("OpenMapped(%s, %s): %v", dir, m.Path, err)
			continue
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil || !os.SameFile(fi, want) {
			t.Errorf("OpenMapped(%s, %s) opened another file (%v)", dir, m.Path, err)
		}
		if FileKey(fi) == "" || FileKey(fi) != FileKey(want) {
			t.Errorf("FileKey %q, of the file by path %q", FileKey(fi), FileKey(want))
		}
	}
	for _, bad := range []Mapping{
		{Start: 0x1000, End: 0x2000, Path: "[vdso]"},
		{Start: 0x1000, End: 0x2000},
		{Start: 0x1000, End: 0x2000, Inode: 1, Path: "/"}, // a directory
	} {
		if f, err := OpenMapped(fake, bad); err == nil {
			f.Close()
			t.Errorf("OpenMapped(%+v) succeeded", bad)
		}
	}
}

func TestVDSO(t *testing.T) {
	img, err := VDSO()
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ReadMaps("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Path == "[vdso]" && m.End-m.Start != uint64(len(img)) {
			t.Errorf("vDSO image of %d bytes, its mapping %d", len(img), m.End-m.Start)
		}
	}
	if again, _ := VDSO(); &again[0] != &img[0] {
		t.Errorf("VDSO read the image again")
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("the vDSO image is no ELF file: %v", err)
	}
	if _, err := f.DynamicSymbols(); err != nil {
		t.Errorf("vDSO symbols: %v", err)
	}
	file := filepath.Join(t.TempDir(), "vdso.so")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := BuildID(f), readelfBuildID(t, file); got != want {
		t.Errorf("vDSO BuildID = %q, readelf -n says %q", got, want)
	}
}

func TestGuard(t *testing.T) {
	want := errors.New("malformed")
	if err := Guard("f", func() error { return want }); err != want {
		t.Errorf("Guard passed %v through as %v", want, err)
	}
	if err := Guard("f", func() error { return nil }); err != nil {
		t.Errorf("Guard of a nil error: %v", err)
	}
	err := Guard("/bin/x", func() error {
		var s []int
		_ = s[3]
		return nil
	})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Path != "/bin/x" || !strings.Contains(pe.Stack, "TestGuard") {
		t.Fatalf("Guard of an index panic = %#v, want a *ParseError for /bin/x with the stack", err)
	}
	if _, ok := pe.Panic.(runtime.Error); !ok {
		t.Errorf("ParseError.Panic = %#v, want the runtime error", pe.Panic)
	}
}

func TestGuardTruncatedMapping(t *testing.T) {
	// A file truncated under its mapping: reading past its new end raises
	// SIGBUS, which Guard returns as a *ParseError instead of crashing.
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, make([]byte, 3*os.Getpagesize()), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 3*os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := os.Truncate(file, 0); err != nil {
		t.Fatal(err)
	}
	var sink byte
	err = Guard(file, func() error {
		sink = mem[2*os.Getpagesize()]
		return nil
	})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Path != file {
		t.Errorf("Guard of a read past a truncated mapping = %v (read %d), want a *ParseError", err, sink)
	}
}
