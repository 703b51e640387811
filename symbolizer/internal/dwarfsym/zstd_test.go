package dwarfsym

import (
	"bytes"
	"compress/zlib"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// zstdify rewrites the zlib-compressed (SHF_COMPRESSED) sections of the
// ELF64 file at src as zstd-compressed ones in dst, with the zstd tool:
// gcc 12 and binutils 2.40 here cannot emit zstd debug sections. The new
// section contents are appended to the file and the section headers
// pointed at them.
func zstdify(t *testing.T, src, dst string) {
	t.Helper()
	zstdTool := testenv.RequireTool(t, "zstd")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Class != elf.ELFCLASS64 || f.ByteOrder != binary.LittleEndian {
		t.Fatalf("%s: zstdify handles little-endian ELF64 only", src)
	}
	shoff := binary.LittleEndian.Uint64(data[0x28:])
	n := 0
	for i, s := range f.Sections {
		if s.Flags&elf.SHF_COMPRESSED == 0 {
			continue
		}
		plain, err := io.ReadAll(s.Open())
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		// Check it really was zlib.
		raw := data[s.Offset : s.Offset+s.FileSize]
		if binary.LittleEndian.Uint32(raw) != uint32(elf.COMPRESS_ZLIB) {
			t.Fatalf("%s: not zlib", s.Name)
		}
		if _, err := zlib.NewReader(bytes.NewReader(raw[24:])); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		cmd := exec.Command(zstdTool, "-q", "-c", "-19")
		cmd.Stdin = bytes.NewReader(plain)
		z, err := cmd.Output()
		if err != nil {
			t.Fatalf("zstd: %v", err)
		}
		for len(data)%8 != 0 {
			data = append(data, 0)
		}
		off := uint64(len(data))
		var chdr [24]byte
		binary.LittleEndian.PutUint32(chdr[0:], uint32(elf.COMPRESS_ZSTD))
		binary.LittleEndian.PutUint64(chdr[8:], uint64(len(plain)))
		binary.LittleEndian.PutUint64(chdr[16:], 1)
		data = append(append(data, chdr[:]...), z...)
		sh := shoff + uint64(i)*64
		binary.LittleEndian.PutUint64(data[sh+24:], off)
		binary.LittleEndian.PutUint64(data[sh+32:], uint64(24+len(z)))
		n++
	}
	if n == 0 {
		t.Fatalf("%s: no compressed sections", src)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestZstdSections(t *testing.T) {
	src := workload(t, "dwarf-c-zlib")
	dst := filepath.Join(t.TempDir(), "dwarf-c-zstd")
	zstdify(t, src, dst)
	f := openELF(t, dst)
	raw, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	zstd := 0
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_COMPRESSED != 0 && binary.LittleEndian.Uint32(raw[s.Offset:]) == uint32(elf.COMPRESS_ZSTD) {
			zstd++
		}
	}
	if zstd == 0 {
		t.Fatal("no zstd-compressed section in the rewritten file")
	}
	tab, err := Open(f, dst, "", []string{})
	if err != nil {
		t.Fatal(err)
	}
	// addr2line here cannot read zstd sections: compare with its answers
	// on the zlib original.
	compareWithAddr2line(t, tab, src, sampleAddrs(t, src, 2000))
}
