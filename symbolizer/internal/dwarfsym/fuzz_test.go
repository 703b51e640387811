package dwarfsym

import (
	"bytes"
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzOpen feeds crafted ELF files to Open and resolves addresses across
// their code. The seeds (testdata/fuzz/FuzzOpen) are tiny static binaries
// with DWARF 4, DWARF 5, zlib-compressed sections, a separate debug file
// and MiniDebugInfo. Open must return an error or a Table, and neither
// may panic: not Open (the symbolizer runs it under process.Guard, which
// would hide a panic of our own), nor the parsing of a unit (under Guard
// in loadUnit, which keeps the first panic for this test).
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		ef, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return
		}
		// A relative path and no debug directories: no file system access.
		tab, err := Open(ef, "fuzz", "", []string{})
		if err != nil {
			return
		}
		for _, r := range tab.unitRngs {
			for _, pc := range []uint64{r.lo, r.lo + (r.hi-r.lo)/2, r.hi - 1, r.hi} {
				tab.Resolve(pc)
			}
		}
		for _, r := range execRanges(ef) {
			for pc := r.lo; pc < r.hi && pc-r.lo < 4096; pc += 7 {
				tab.Resolve(pc)
			}
		}
		if tab.Size() < 0 {
			t.Fatalf("Size() = %d", tab.Size())
		}
		if pe := tab.panicked.Load(); pe != nil {
			t.Fatalf("a unit's parsing panicked (process.Guard hides it in production): %v\n%s", pe.Panic, pe.Stack)
		}
	})
}

// TestFuzzSeeds checks that every seed opens and names code, so that the
// fuzzer starts from inputs that reach the unit parser.
func TestFuzzSeeds(t *testing.T) {
	seeds, err := filepath.Glob("testdata/fuzz/FuzzOpen/seed-*")
	if err != nil || len(seeds) == 0 {
		t.Fatalf("no seeds: %v", err)
	}
	for _, p := range seeds {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		_, lit, _ := strings.Cut(strings.TrimSpace(string(raw)), "[]byte(")
		data, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ef, err := elf.NewFile(strings.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		tab, err := Open(ef, p, "", []string{})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		named := map[string]bool{}
		for _, r := range execRanges(ef) {
			for pc := r.lo; pc < r.hi; pc++ {
				for _, l := range tab.Resolve(pc) {
					named[l.Function] = true
				}
			}
		}
		if !named["work"] {
			t.Errorf("%s: no address resolves to work; named %v", p, named)
		}
	}
}
