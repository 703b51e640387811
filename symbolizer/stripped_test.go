package symbolizer

import (
	"bytes"
	"debug/elf"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/symbolizer/internal/dwarfsym"
)

// strippedCopy is a copy of the C workload with every symbol stripped.
func strippedCopy(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "burn-stripped")
	if b, err := exec.Command("objcopy", "--strip-all", workload(t, "cpuburn-c"), out).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, b)
	}
	return out
}

// TestStrippedNote: a file without symbols is noted at debug level, once
// however often its object is opened again (after the processes that
// mapped it are gone), and is no parse error.
func TestStrippedNote(t *testing.T) {
	path := strippedCopy(t)
	var log bytes.Buffer
	s := New(Options{Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	defer s.Close()
	for range 3 {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := s.pfiles.Adopt(f, path)
		if err != nil {
			t.Fatal(err)
		}
		o := s.files.objectOf(pf, "/")
		if o.load(s) != nil {
			t.Fatalf("%s: symbols loaded from a stripped file", path)
		}
		s.files.release(o) // no process maps it: closed, as no tables were loaded
	}
	if n := strings.Count(log.String(), "level=DEBUG msg=\"symbolizer: file has no symbols (stripped)"); n != 1 {
		t.Errorf("%d notes, want 1:\n%s", n, log.String())
	}
	if strings.Contains(log.String(), "level=WARN") {
		t.Errorf("a stripped file is warned about:\n%s", log.String())
	}
	if st := s.Stats(); st.ParseErrors != 0 {
		t.Errorf("%d parse errors for a stripped file", st.ParseErrors)
	}
}

// TestOnceSetBounded: the set forgets everything when full, so its memory
// stays bounded (a note may then repeat).
func TestOnceSetBounded(t *testing.T) {
	o := onceSet{max: 2}
	for i, tc := range []struct {
		key  string
		want bool
	}{{"a", true}, {"a", false}, {"b", true}, {"b", false}, {"c", true}, {"a", true}, {"c", false}} {
		if got := o.first(tc.key); got != tc.want {
			t.Errorf("step %d: first(%q) = %v, want %v", i, tc.key, got, tc.want)
		}
		if len(o.seen) > o.max {
			t.Errorf("step %d: %d keys held, bound %d", i, len(o.seen), o.max)
		}
	}
}

// TestExecutable: the mapping of a process's executable, among its
// libraries; nil for processes not observed.
func TestExecutable(t *testing.T) {
	path := workload(t, "cpuburn-c")
	cmd := start(t, path)
	s := New(Options{})
	defer s.Close()
	pid := uint32(cmd.Process.Pid)
	if m := s.Executable(pid); m != nil {
		t.Errorf("unobserved process: %+v", m)
	}
	if err := s.Observe(pid); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	abs, _ = filepath.EvalSymlinks(abs)
	m := s.Executable(pid)
	if m == nil || m.File != abs {
		t.Fatalf("executable mapping %+v, want %s", m, abs)
	}
	if fr := s.ResolveUser(pid, m.Start); fr.Mapping != m {
		t.Errorf("ResolveUser gives mapping %p, Executable %p: the builder keys mappings by pointer", fr.Mapping, m)
	}
}

// TestParsePanicRecovered: a panic while reading a file's DWARF is
// counted and logged as an error, and the file is named from its symbol
// table instead (its DWARF is not read again); the program goes on.
func TestParsePanicRecovered(t *testing.T) {
	defer func(f func(*elf.File, io.ReaderAt, string, string, []string, string) (*dwarfsym.Table, error)) {
		openDWARF = f
	}(openDWARF)
	calls := 0
	openDWARF = func(*elf.File, io.ReaderAt, string, string, []string, string) (*dwarfsym.Table, error) {
		calls++
		panic("crafted DWARF")
	}
	path := workload(t, "symtest-c")
	var log bytes.Buffer
	s := New(Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	defer s.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := s.pfiles.Adopt(f, path)
	if err != nil {
		t.Fatal(err)
	}
	o := s.files.objectOf(pf, "/")
	defer s.files.release(o)
	for range 2 {
		tb := o.load(s)
		if tb == nil || tb.dwarf != nil || tb.syms.Load() == nil {
			t.Fatalf("tables after a panic in the DWARF reader: %+v, want the symbol table alone", tb)
		}
	}
	syms, err := pf.ELF.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, sym := range syms {
		if sym.Name == "main" {
			found = true
			if name, _, ok := o.load(s).syms.Load().Lookup(sym.Value + 1); !ok || name != "main" {
				t.Errorf("main+1 named %q, %v from the symbol table, want main", name, ok)
			}
		}
	}
	if !found {
		t.Fatalf("%s has no symbol main", path)
	}
	if n := s.Stats().RecoveredPanics; n != 1 || calls != 1 {
		t.Errorf("RecoveredPanics = %d after %d reads, want 1 and 1", n, calls)
	}
	if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "crafted DWARF") {
		t.Errorf("no error logged naming the panic:\n%s", log.String())
	}
}
