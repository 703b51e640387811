package cfi

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

func FuzzParse(f *testing.F) {
	// Seeds: the start of libc's .eh_frame and a few hand-made entries.
	if ef, err := elf.Open("/lib/x86_64-linux-gnu/libc.so.6"); err == nil {
		if s := ef.Section(".eh_frame"); s != nil {
			if b, err := s.Data(); err == nil && len(b) > 4096 {
				f.Add(b[:4096], true)
			}
		}
		ef.Close()
	}
	f.Add([]byte{}, true)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, false)
	f.Fuzz(func(t *testing.T, data []byte, eh bool) {
		sec := &Section{Name: ".eh_frame", Data: data, Addr: 0x1000, EH: eh, PtrSize: 8, Order: binary.LittleEndian}
		fdes, err := Parse(sec)
		if err != nil {
			return
		}
		for _, fde := range fdes {
			if fde.End-fde.Begin > 1<<20 {
				continue // keep the interpreter's row count bounded per input
			}
			fde.Execute(func(r *Row) error {
				if r.Start >= r.End || r.Start < fde.Begin || r.End > fde.End {
					t.Fatalf("row %#x..%#x outside FDE %#x..%#x", r.Start, r.End, fde.Begin, fde.End)
				}
				return nil
			})
		}
	})
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated length", []byte{1, 0}, "cfi: .eh_frame at offset 0x0: entry length: need 4 bytes, have 2"},
		{"length past end", []byte{0x20, 0, 0, 0, 0, 0, 0, 0}, "cfi: .eh_frame at offset 0x0: entry length 32 exceeds the 4 bytes left"},
		{"bad CIE version", []byte{8, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0}, "cfi: .eh_frame at offset 0x0: unsupported CIE version 9"},
		{"FDE without CIE", []byte{8, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0}, "cfi: .eh_frame at offset 0x0: CIE pointer 0x10 points before the section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(&Section{Name: ".eh_frame", Data: tc.data, EH: true, PtrSize: 8, Order: binary.LittleEndian})
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
}

func TestLibcParses(t *testing.T) {
	const path = "/lib/x86_64-linux-gnu/libc.so.6"
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s: %v", path, err)
	}
	ef, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	s := ef.Section(".eh_frame")
	data, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	fdes, err := Parse(&Section{Name: ".eh_frame", Data: data, Addr: s.Addr, EH: true, PtrSize: 8, Order: binary.LittleEndian})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testenv.RequireTool(t, "readelf"), "--debug-dump=frames", path).Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("readelf --debug-dump=frames %s: %v", path, err)
	}
	if want := bytes.Count(out, []byte(" FDE cie=")); want != len(fdes) {
		t.Errorf("parsed %d FDEs, readelf lists %d", len(fdes), want)
	}
	rows := 0
	for _, f := range fdes {
		if err := f.Execute(func(*Row) error { rows++; return nil }); err != nil {
			t.Errorf("FDE at %#x: %v", f.Off, err)
		}
	}
	if len(fdes) < 1000 || rows < len(fdes) {
		t.Errorf("%d FDEs, %d rows: too few for libc", len(fdes), rows)
	}
}
