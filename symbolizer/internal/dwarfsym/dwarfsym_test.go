package dwarfsym

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// workload is testenv.Workload, by the name this package's tests call it.
var workload = testenv.Workload

func openELF(t testing.TB, p string) *elf.File {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// sampleAddrs returns about n addresses spread over the function symbols
// of the ELF file at p (every stride bytes inside each function).
func sampleAddrs(t testing.TB, p string, n int) []uint64 {
	t.Helper()
	f := openELF(t, p)
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	var total uint64
	var funcs []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 && s.Section != elf.SHN_UNDEF {
			funcs = append(funcs, s)
			total += s.Size
		}
	}
	if total == 0 {
		t.Fatalf("%s: no function symbols", p)
	}
	stride := total / uint64(n)
	if stride == 0 {
		stride = 1
	}
	seen := map[uint64]bool{}
	var addrs []uint64
	for i, s := range funcs {
		for a := s.Value + uint64(i)%stride; a < s.Value+s.Size; a += stride {
			if !seen[a] {
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i] < addrs[j] })
	return addrs
}

// frame is one line of addr2line's answer, normalized.
type frame struct {
	fn, file string
	line     int64
}

func (f frame) String() string { return fmt.Sprintf("%s %s:%d", f.fn, f.file, f.line) }

// addr2line runs `addr2line -f -i -a -e bin` once with every address on
// stdin (raw linkage names: no -C, so that names compare exactly).
func addr2line(t testing.TB, bin string, addrs []uint64) map[uint64][]frame {
	t.Helper()
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "0x%x\n", a)
	}
	cmd := exec.Command(testenv.RequireTool(t, "addr2line"), "-f", "-i", "-a", "-e", bin)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("addr2line %s: %v", bin, err)
	}
	res := make(map[uint64][]frame, len(addrs))
	var cur uint64
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "0x") && !strings.Contains(l, ":") {
			v, err := strconv.ParseUint(l[2:], 16, 64)
			if err != nil {
				t.Fatalf("addr2line output %q: %v", l, err)
			}
			cur = v
			continue
		}
		if !sc.Scan() {
			t.Fatalf("addr2line output ends after function %q", l)
		}
		res[cur] = append(res[cur], frame{fn: l, file: "", line: 0})
		fr := &res[cur][len(res[cur])-1]
		fr.file, fr.line = parseFileLine(sc.Text())
	}
	return res
}

// cloneSuffix matches the suffixes GCC and LLVM give function clones.
var cloneSuffix = regexp.MustCompile(`(\.(isra|part|constprop|cold|lto_priv|llvm)(\.[0-9]+)?)+$`)

// llvmSymbolizer runs llvm-symbolizer once with every address on stdin.
// Clone suffixes (".isra.0") that it takes from the symbol table are
// dropped from names.
func llvmSymbolizer(t testing.TB, bin string, addrs []uint64) map[uint64][]frame {
	t.Helper()
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "0x%x\n", a)
	}
	cmd := exec.Command(testenv.RequireTool(t, "llvm-symbolizer"), "--obj="+bin, "--no-demangle", "--functions=linkage", "--inlines", "--output-style=LLVM")
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llvm-symbolizer %s: %v", bin, err)
	}
	res := make(map[uint64][]frame, len(addrs))
	i := 0
	lines := strings.Split(string(out), "\n")
	for j := 0; j < len(lines) && i < len(addrs); {
		if lines[j] == "" {
			if j > 0 && lines[j-1] != "" {
				i++
			}
			j++
			continue
		}
		if j+1 >= len(lines) {
			break
		}
		fn := lines[j]
		fn = cloneSuffix.ReplaceAllString(fn, "")
		loc := lines[j+1]
		if k := strings.LastIndexByte(loc, ':'); k >= 0 {
			loc = loc[:k] // column
		}
		file, line := parseFileLine(loc)
		if fn != "??" {
			res[addrs[i]] = append(res[addrs[i]], frame{fn: fn, file: file, line: line})
		}
		j += 2
	}
	return res
}

// parseFileLine parses addr2line's "file:line (discriminator n)".
func parseFileLine(s string) (string, int64) {
	if i := strings.Index(s, " (discriminator"); i >= 0 {
		s = s[:i]
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, 0
	}
	file, ls := s[:i], s[i+1:]
	if file == "??" {
		file = ""
	}
	n, _ := strconv.ParseInt(ls, 10, 64)
	return file, n
}

func ours(tab *Table, pc uint64) []frame {
	var fs []frame
	for _, l := range tab.Resolve(pc) {
		fs = append(fs, frame{fn: l.Function, file: l.File, line: l.Line})
	}
	return fs
}

// firstDiff returns the index of the first frame where a and b differ
// (file paths compared cleaned: debug/dwarf cleans "dir/../x", binutils
// does not), or -1 when they agree.
func firstDiff(a, b []frame) int {
	for i := range a {
		if i >= len(b) {
			return i
		}
		x, y := a[i], b[i]
		if x.file != "" {
			x.file = filepath.Clean(x.file)
		}
		if y.file != "" {
			y.file = filepath.Clean(y.file)
		}
		if x != y {
			return i
		}
	}
	if len(b) > len(a) {
		return len(a)
	}
	return -1
}

// compareWithAddr2line resolves addrs with tab and with addr2line on ref
// and fails when fewer than 99.5% agree. A pc that addr2line names
// without DWARF agrees with a nil answer.
func compareWithAddr2line(t *testing.T, tab *Table, ref string, addrs []uint64) {
	t.Helper()
	want := addr2line(t, ref, addrs)
	var bad []string
	var badPCs []uint64
	inlined := 0
	for _, pc := range addrs {
		w := want[pc]
		got := ours(tab, pc)
		if len(w) == 1 && (w[0].fn == "??" || w[0].line == 0) {
			// addr2line has no DWARF line for pc: "??", or a name from the
			// ELF symbol table and file from an STT_FILE symbol (package
			// symbolizer falls back to the symbol table itself).
			if len(got) == 0 || len(got) == 1 && got[0].fn == w[0].fn && got[0].line == 0 {
				continue
			}
		}
		if len(w) > 1 {
			inlined++
		}
		if i := firstDiff(got, w); i >= 0 {
			at := func(fs []frame) string {
				if i < len(fs) {
					return fs[i].String()
				}
				return "(none)"
			}
			badPCs = append(badPCs, pc)
			bad = append(bad, fmt.Sprintf("0x%x: %d vs %d frames, frame %d differs:\n\twant %s\n\tgot  %s", pc, len(w), len(got), i, at(w), at(got)))
		}
	}
	raw := float64(len(addrs)-len(bad)) / float64(len(addrs))
	// Where addr2line and we differ, llvm-symbolizer decides: binutils 2.40
	// has known bugs (e.g. wrong DWARF 5 file for some out-of-line clones,
	// the enclosing symbol's name for inlined extern "C" functions).
	var llvmAgrees []uint64
	if len(badPCs) > 0 {
		lw := llvmSymbolizer(t, ref, badPCs)
		var still []string
		for i, pc := range badPCs {
			if firstDiff(ours(tab, pc), lw[pc]) < 0 {
				llvmAgrees = append(llvmAgrees, pc)
			} else {
				still = append(still, bad[i])
			}
		}
		bad = still
	}
	agree := float64(len(addrs)-len(bad)) / float64(len(addrs))
	t.Logf("%s: %d addresses (%d with inlined frames per addr2line): %.2f%% agree with addr2line; %d more agree with llvm-symbolizer where addr2line differs; %.2f%% agree with one of them",
		filepath.Base(ref), len(addrs), inlined, 100*raw, len(llvmAgrees), 100*agree)
	for i, pc := range llvmAgrees {
		if i == 5 {
			break
		}
		t.Logf("addr2line differs, llvm-symbolizer agrees at 0x%x: addr2line %v, ours %v", pc, want[pc], ours(tab, pc))
	}
	for i, b := range bad {
		if i == 40 {
			t.Logf("... %d more mismatches", len(bad)-i)
			break
		}
		t.Log(b)
	}
	if inlined == 0 {
		t.Errorf("%s: no address has inlined frames; the workload does not exercise inlining", ref)
	}
	if agree < 0.995 {
		t.Errorf("%s: only %.2f%% of %d addresses agree with addr2line, want >= 99.5%%", ref, 100*agree, len(addrs))
	}
}

func TestAgainstAddr2line(t *testing.T) {
	for _, tc := range []struct{ name, ref string }{
		{"dwarf-c", ""},
		{"dwarf-c-v4", ""},
		{"dwarf-c-zlib", ""},
		{"dwarf-cpp", ""},
		{"dwarf-rust", ""},
		{"dwarf-c-debuglink", "dwarf-c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := workload(t, tc.name)
			ref := bin
			if tc.ref != "" {
				ref = workload(t, tc.ref)
			}
			tab, err := Open(openELF(t, bin), bin, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			compareWithAddr2line(t, tab, ref, sampleAddrs(t, ref, 6000))
			if tab.Size() <= 0 {
				t.Errorf("Size() = %d after lookups", tab.Size())
			}
		})
	}
}

// buildIDPath lays the debug file out as <dir>/.build-id/xx/yyyy.debug.
func buildIDPath(t *testing.T, bin, debug, dir string) {
	t.Helper()
	h := process.BuildID(openELF(t, bin))
	if len(h) < 4 {
		t.Fatalf("%s has no build id", bin)
	}
	p := filepath.Join(dir, ".build-id", h[:2], h[2:]+".debug")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(debug)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBuildIDDebugDir(t *testing.T) {
	bin := workload(t, "dwarf-c-buildid")
	dir := t.TempDir()
	f := openELF(t, bin)
	if _, err := Open(f, bin, "", []string{dir}); !errors.Is(err, ErrNoDWARF) {
		t.Fatalf("Open with an empty debug dir: err = %v, want ErrNoDWARF", err)
	}
	buildIDPath(t, bin, bin+".debug", dir)
	tab, err := Open(f, bin, "", []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	compareWithAddr2line(t, tab, bin+".full", sampleAddrs(t, bin+".full", 3000))
}

// TestRootDir finds the build-id debug file under the process root
// directory, as for a process in another mount namespace.
func TestRootDir(t *testing.T) {
	bin := workload(t, "dwarf-c-buildid")
	root := t.TempDir()
	buildIDPath(t, bin, bin+".debug", filepath.Join(root, "usr/lib/debug"))
	tab, err := Open(openELF(t, bin), "/app/dwarf-c-buildid", root, nil)
	if err != nil {
		t.Fatal(err)
	}
	compareWithAddr2line(t, tab, bin+".full", sampleAddrs(t, bin+".full", 1000))
}

func TestDebugLinkCRC(t *testing.T) {
	bin := workload(t, "dwarf-c-debuglink")
	dir := t.TempDir()
	copyFile := func(src, dst string, corrupt bool) {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if corrupt {
			data[len(data)/2] ^= 0xff
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stripped := filepath.Join(dir, "dwarf-c-debuglink")
	copyFile(bin, stripped, false)
	// A debug file in the .debug subdirectory is found...
	if err := os.Mkdir(filepath.Join(dir, ".debug"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(bin+".debug", filepath.Join(dir, ".debug", "dwarf-c-debuglink.debug"), false)
	tab, err := Open(openELF(t, stripped), stripped, "", []string{})
	if err != nil {
		t.Fatal(err)
	}
	compareWithAddr2line(t, tab, workload(t, "dwarf-c"), sampleAddrs(t, workload(t, "dwarf-c"), 500))
	// ...but not when its CRC does not match.
	copyFile(bin+".debug", filepath.Join(dir, ".debug", "dwarf-c-debuglink.debug"), true)
	_, err = Open(openELF(t, stripped), stripped, "", []string{})
	if !errors.Is(err, ErrNoDWARF) || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("Open with a corrupted debug file: err = %v, want ErrNoDWARF mentioning the CRC", err)
	}
}

// TestMiniDebugInfo checks names from .gnu_debugdata against the
// outermost function addr2line names on the unstripped binary.
func TestMiniDebugInfo(t *testing.T) {
	bin := workload(t, "dwarf-c-mini")
	ref := workload(t, "dwarf-c")
	tab, err := Open(openELF(t, bin), bin, "", []string{})
	if err != nil {
		t.Fatal(err)
	}
	addrs := sampleAddrs(t, ref, 2000)
	want := addr2line(t, ref, addrs)
	bad, named := 0, 0
	for _, pc := range addrs {
		w := want[pc]
		got := tab.Resolve(pc)
		if len(w) == 0 || w[len(w)-1].fn == "??" {
			continue
		}
		named++
		outer := w[len(w)-1].fn
		if len(got) != 1 || got[0].Function != outer || got[0].File != "" {
			bad++
			if bad < 20 {
				t.Logf("0x%x: want %s, got %+v", pc, outer, got)
			}
		}
	}
	if named == 0 || bad*200 > named {
		t.Errorf("%d of %d named addresses disagree with addr2line", bad, named)
	}
}

func TestNoDWARF(t *testing.T) {
	bin := workload(t, "dwarf-c-buildid") // stripped, no debuglink
	_, err := Open(openELF(t, bin), bin, "", []string{t.TempDir()})
	if !errors.Is(err, ErrNoDWARF) {
		t.Fatalf("err = %v, want ErrNoDWARF", err)
	}
}
