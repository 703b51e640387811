package mapped

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/scorch-profiler/scorch/internal/process"
)

func tempFile(t *testing.T, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReadAt(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	f := tempFile(t, data)
	for _, tc := range []struct {
		off, n uint64
		mapped bool
	}{
		{0, uint64(len(data)), true},
		{4097, 100 << 10, true}, // unaligned offset
		{10, 100, false},        // small: read
	} {
		r, err := ReadAt(f, tc.off, tc.n, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if r.Mapped() != tc.mapped {
			t.Errorf("ReadAt(%d, %d): mapped %v, want %v", tc.off, tc.n, r.Mapped(), tc.mapped)
		}
		if !bytes.Equal(r.Bytes(), data[tc.off:tc.off+tc.n]) {
			t.Errorf("ReadAt(%d, %d): wrong bytes", tc.off, tc.n)
		}
		r.Close()
		r.Close()
	}
	if _, err := ReadAt(f, uint64(len(data))-10, 1<<16, 1<<20); err == nil {
		t.Error("range past the end of the file accepted")
	}
	if _, err := ReadAt(f, 0, 1<<17, 1<<16); err == nil {
		t.Error("range over the limit accepted")
	}
	if r, err := ReadAt(bytes.NewReader(data), 5, 1<<16, 1<<20); err != nil || r.Mapped() || !bytes.Equal(r.Bytes(), data[5:5+1<<16]) {
		t.Errorf("ReadAt of a bytes.Reader: %v, mapped %v", err, r.Mapped())
	}
}

var sink byte

// TestTruncated reads a mapping whose file was truncated: the fault must
// be an error under process.Guard, not a crash.
func TestTruncated(t *testing.T) {
	data := bytes.Repeat([]byte{1}, 1<<20)
	f := tempFile(t, data)
	r, err := ReadAt(f, 0, uint64(len(data)), 1<<20)
	if err != nil || !r.Mapped() {
		t.Fatalf("ReadAt: %v, mapped %v", err, r.Mapped())
	}
	defer r.Close()
	if err := os.Truncate(f.Name(), 0); err != nil {
		t.Fatal(err)
	}
	err = process.Guard(f.Name(), func() error {
		sink = r.Bytes()[len(data)-1]
		return nil
	})
	var pe *process.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("reading a truncated mapping under process.Guard: %v, want a *process.ParseError", err)
	}
	if _, ok := pe.Panic.(runtime.Error); !ok {
		t.Errorf("panic %v is not a runtime.Error", pe.Panic)
	}
}

// TestAttach checks that an attached region is unmapped once its owner is
// garbage.
func TestAttach(t *testing.T) {
	f := tempFile(t, make([]byte, 1<<20))
	r, err := ReadAt(f, 0, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	owner := new([16]byte)
	Attach(owner, r)
	owner = nil
	for i := 0; i < 20 && r.Mapped(); i++ {
		runtime.GC()
		runtime.Gosched()
	}
	if r.Mapped() {
		t.Error("region still mapped after its owner was collected")
	}
	_ = owner
}

// TestSpill: bytes that exist nowhere as a file come back mapped from a
// file of the spill directory, the same bytes, and the file is removed
// when the region is closed; small ones, a directory that cannot be
// written and no directory give them in memory and leave nothing; more
// than the limit is an error either way; and a mapped region reads the
// same after its pages are dropped.
func TestSpill(t *testing.T) {
	data := bytes.Repeat([]byte("spilled bytes, "), 20000) // 300 KB
	open := func(b []byte) func() io.Reader { return func() io.Reader { return bytes.NewReader(b) } }
	dir := t.TempDir()
	r, err := Spill(dir, open(data), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Mapped() || !bytes.Equal(r.Bytes(), data) {
		t.Fatalf("spilled: mapped %v, equal %v", r.Mapped(), bytes.Equal(r.Bytes(), data))
	}
	r.DropPages()
	if !bytes.Equal(r.Bytes(), data) {
		t.Fatal("the bytes changed after DropPages")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the spill directory holds %d files while the region is mapped, want 1", len(ents))
	}
	r.Close()
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("the spill directory holds %s after Close, want nothing", ents[0].Name())
	}

	for name, tc := range map[string]struct {
		dir  string
		data []byte
	}{
		"small":      {dir, data[:100]},
		"no dir":     {"", data},
		"not a dir":  {filepath.Join(dir, "missing"), data},
		"empty read": {dir, nil},
	} {
		r, err := Spill(tc.dir, open(tc.data), 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Mapped() || !bytes.Equal(r.Bytes(), tc.data) {
			t.Errorf("%s: mapped %v, %d bytes, want %d in memory", name, r.Mapped(), len(r.Bytes()), len(tc.data))
		}
	}
	for _, d := range []string{dir, ""} {
		if _, err := Spill(d, open(data), 1000); !errors.Is(err, errTooBig) {
			t.Errorf("spill dir %q: %d bytes under a limit of 1000: %v, want errTooBig", d, len(data), err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("the spill directory holds %s after spills in memory and refused ones, want nothing", ents[0].Name())
	}
}
