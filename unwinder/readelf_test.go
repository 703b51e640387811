package unwinder

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/gopclntab"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// workload is testenv.Workload, by the name this package's tests call it.
var workload = testenv.Workload

// readelfRow is one row of readelf --debug-dump=frames-interp.
type readelfRow struct {
	loc, end uint64
	cfa      string // "rsp+8", "exp", ...
	rbp, ra  string // "u", "c-16", ... ("" when the column is absent)
}

// parseReadelf runs readelf and returns its rows, with end set from the next
// row or the FDE's end.
func parseReadelf(t *testing.T, path string) []readelfRow {
	t.Helper()
	cmd := exec.Command(testenv.RequireTool(t, "readelf"), "--debug-dump=frames-interp", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("readelf %s: %v\n%s", path, err, stderr.Bytes())
	}
	if err != nil {
		// readelf exits 1 on warnings about unrelated sections (e.g. a
		// .gnu_debuglink whose target is absent); the frames are printed.
		t.Logf("readelf %s: %v: %s", path, err, firstLine(stderr.String()))
	}
	cies := map[string]readelfRow{} // by "section:offset"
	var rows []readelfRow
	var section string
	var cols []string
	var curCIE string // offset of the CIE being listed
	var fdeRows []int // indices into rows of the current FDE
	var fdeBegin, fdeEnd uint64
	var fdeCIE string
	inFDE := false
	finishFDE := func() {
		if !inFDE {
			return
		}
		inFDE = false
		if len(fdeRows) == 0 {
			// No instructions: the CIE's initial row applies.
			r, ok := cies[section+":"+fdeCIE]
			if !ok {
				t.Fatalf("readelf: FDE refers to unknown CIE %s", fdeCIE)
			}
			r.loc, r.end = fdeBegin, fdeEnd
			if fdeBegin < fdeEnd {
				rows = append(rows, r)
			}
			return
		}
		for k, i := range fdeRows {
			if k+1 < len(fdeRows) {
				rows[i].end = rows[fdeRows[k+1]].loc
			} else {
				rows[i].end = fdeEnd
			}
		}
		fdeRows = nil
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := cells(line)
		switch {
		case strings.HasPrefix(line, "Contents of the "):
			finishFDE()
			section = f[3]
		case len(f) >= 4 && f[3] == "CIE":
			finishFDE()
			curCIE = f[0]
		case len(f) >= 6 && f[3] == "FDE":
			finishFDE()
			curCIE = ""
			inFDE = true
			fdeCIE = strings.TrimPrefix(f[4], "cie=")
			pcs := strings.SplitN(strings.TrimPrefix(f[5], "pc="), "..", 2)
			fdeBegin, _ = strconv.ParseUint(pcs[0], 16, 64)
			fdeEnd, _ = strconv.ParseUint(pcs[1], 16, 64)
		case len(f) >= 2 && f[0] == "LOC" && f[1] == "CFA":
			cols = f
		case len(f) >= 2 && len(f[0]) == 16 && isHex(f[0]) && cols != nil:
			loc, _ := strconv.ParseUint(f[0], 16, 64)
			r := readelfRow{loc: loc, cfa: f[1]}
			for i := 2; i < len(f) && i < len(cols); i++ {
				switch cols[i] {
				case "rbp":
					r.rbp = f[i]
				case "ra":
					r.ra = f[i]
				}
			}
			if curCIE != "" {
				cies[section+":"+curCIE] = r
				curCIE = ""
			} else if inFDE {
				fdeRows = append(fdeRows, len(rows))
				rows = append(rows, r)
			}
		}
	}
	finishFDE()
	return rows
}

// cells splits a readelf line into cells; "r10 (r10)" is one cell.
func cells(line string) []string {
	var out []string
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "(") && len(out) > 0 {
			out[len(out)-1] += " " + w
			continue
		}
		out = append(out, w)
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// expected converts a readelf row into the table row it should compile to;
// ok is false when the row is outside what the format expresses.
func (r readelfRow) expected() (Row, bool) {
	if r.ra == "u" {
		return Row{Kind: KindEndOfStack}, true
	}
	if r.ra != "c-8" {
		return Row{}, false
	}
	var row Row
	switch {
	case strings.HasPrefix(r.cfa, "rsp+"):
		row.CFAReg = RegSP
	case strings.HasPrefix(r.cfa, "rbp+"):
		row.CFAReg = RegFP
	default:
		return Row{}, false
	}
	off, err := strconv.Atoi(r.cfa[4:])
	if err != nil || off%8 != 0 || off > 0xfff*8 {
		return Row{}, false
	}
	row.CFAOffset = int32(off)
	row.RAOffset = -8
	switch {
	case r.rbp == "" || r.rbp == "u" || r.rbp == "s":
	case strings.HasPrefix(r.rbp, "c-") || strings.HasPrefix(r.rbp, "c+"):
		off, err := strconv.Atoi(r.rbp[1:])
		if err != nil || off%8 != 0 || off < -1024 || off > 1016 {
			return Row{}, false
		}
		row.FPOffset = int16(off)
	default:
		return Row{}, false
	}
	row.Kind = KindCFA
	if row.CFAReg == RegFP && row.CFAOffset == 16 && row.FPOffset == -16 {
		row.Kind = KindFramePointer
	}
	return row, true
}

// compareWithReadelf checks every table row against readelf's rows and
// returns a summary of what could not be compared.
func compareWithReadelf(t *testing.T, path string) {
	compareWithReadelfOf(t, path, path)
}

// compareWithReadelfOf compares the table of path with the CFI readelf
// prints for cfiPath: the same file, or its unstripped twin.
func compareWithReadelfOf(t *testing.T, path, cfiPath string) {
	cf, err := elf.Open(cfiPath)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	f, r := openELF(t, path)
	tab, err := Build(f, r)
	if err != nil {
		t.Fatalf("Build(%s): %v", path, err)
	}
	ours := tab.Rows()
	theirs := parseReadelf(t, cfiPath)
	if len(theirs) == 0 {
		t.Fatalf("readelf printed no CFI rows for %s", path)
	}
	eos := endOfStackRanges(cf)
	goFn := goFuncAt(t, f)
	var compared, mismatches int
	notCompared := map[string]int{}
	// Code the linker discarded keeps its FDE with an address of 0 (older
	// toolchains, e.g. Debian's rustc 1.63): no code there to unwind.
	inCode := func(pc uint64) bool {
		for _, sec := range f.Sections {
			if sec.Flags&elf.SHF_EXECINSTR != 0 && sec.Addr <= pc && pc < sec.Addr+sec.Size {
				return true
			}
		}
		return false
	}
	for _, tr := range theirs {
		if !inCode(tr.loc) {
			notCompared["outside code (discarded by the linker)"]++
			continue
		}
		want, representable := tr.expected()
		i := sort.Search(len(ours), func(i int) bool { return ours[i].PC > tr.loc }) - 1
		if i < 0 {
			t.Errorf("%s: no row covers %#x (readelf: cfa=%s rbp=%s ra=%s)", path, tr.loc, tr.cfa, tr.rbp, tr.ra)
			mismatches++
			continue
		}
		for ; i < len(ours) && ours[i].PC < tr.end; i++ {
			got := ours[i]
			at := max(got.PC, tr.loc)
			switch {
			case got.Kind == KindUnsupported:
				if representable {
					notCompared["ours unsupported, readelf representable"]++
					t.Logf("%s: %#x: we say unsupported, readelf says cfa=%s rbp=%s ra=%s", path, at, tr.cfa, tr.rbp, tr.ra)
				} else {
					cfa, _, _ := strings.Cut(tr.cfa, "+")
					notCompared[fmt.Sprintf("unsupported both (cfa=%s+N rbp=%s ra=%s)", cfa, tr.rbp, tr.ra)]++
				}
				continue
			case got.Kind == KindEndOfStack && eos(at):
				notCompared["end of stack by symbol"]++
				continue
			case got.Kind == KindStackSwitch:
				// Go's CFI describes the goroutine-stack frame, not the
				// system stack the call runs on.
				notCompared["stack switch"]++
				continue
			case goFn(at) != nil && (got.Kind == KindEndOfStack || got.Kind == KindFramePointer):
				// Go's top frames and the functions that write SP: Go's
				// .debug_frame gives their SP deltas as if SP were not
				// switched.
				notCompared["Go top frame or SP writer: "+goFn(at).Name]++
				continue
			case goFn(at) != nil && got.Kind == KindCFA && want.Kind == KindCFA:
				// Go's .debug_frame comes from the same SP deltas but does
				// not describe the saved rbp; the pclntab rows do.
				compared++
				if got.CFAReg != want.CFAReg || got.CFAOffset != want.CFAOffset || got.RAOffset != want.RAOffset {
					mismatches++
					t.Errorf("%s: %#x (Go %s): got %+v, readelf says cfa=%s ra=%s", path, at, goFn(at).Name, got, tr.cfa, tr.ra)
				}
				continue
			case got.Kind == KindPLT || got.Kind == KindSignal:
				if tr.cfa != "exp" {
					t.Errorf("%s: %#x: we say %v, readelf says cfa=%s", path, at, got.Kind, tr.cfa)
					mismatches++
				}
				notCompared[got.Kind.String()+" (readelf: exp)"]++
				continue
			}
			compared++
			got.PC = 0
			if !representable || got != want {
				mismatches++
				if mismatches <= 20 {
					t.Errorf("%s: %#x: got %+v, readelf says cfa=%s rbp=%s ra=%s (want %+v)", path, at, got, tr.cfa, tr.rbp, tr.ra, want)
				}
			}
		}
	}
	t.Logf("%s: %d readelf rows, %d table rows, %d compared, %d mismatches; not compared: %v; stats: %s",
		path, len(theirs), len(ours), compared, mismatches, notCompared, tab.Stats().ReasonSummary())
	if compared < len(theirs)/2 {
		t.Errorf("%s: only %d of %d readelf rows compared", path, compared, len(theirs))
	}
}

// goFuncAt returns the pclntab function containing a PC, or nil.
func goFuncAt(t *testing.T, f *elf.File) func(pc uint64) *gopclntab.Func {
	tab, err := gopclntab.OpenFuncs(f, nil)
	if err != nil {
		return func(uint64) *gopclntab.Func { return nil }
	}
	var fns []gopclntab.Func
	for fn, err := range tab.Funcs() {
		if err != nil {
			t.Fatal(err)
		}
		fns = append(fns, fn)
	}
	return func(pc uint64) *gopclntab.Func {
		i := sort.Search(len(fns), func(i int) bool { return fns[i].Entry > pc }) - 1
		if i < 0 || pc >= fns[i].End {
			return nil
		}
		return &fns[i]
	}
}

// endOfStackRanges reports whether a PC is in an end-of-stack symbol.
func endOfStackRanges(f *elf.File) func(pc uint64) bool {
	var rs [][2]uint64
	for _, get := range []func() ([]elf.Symbol, error){f.Symbols, f.DynamicSymbols} {
		syms, _ := get()
		for _, s := range syms {
			if endOfStackSymbols[s.Name] && s.Size > 0 {
				rs = append(rs, [2]uint64{s.Value, s.Value + s.Size})
			}
		}
	}
	return func(pc uint64) bool {
		for _, r := range rs {
			if r[0] <= pc && pc < r[1] {
				return true
			}
		}
		return false
	}
}

func TestReadelf(t *testing.T) {
	testenv.RequireTool(t, "readelf")
	if runtime.GOARCH != "amd64" {
		t.Skip("readelf comparison written for amd64 register names")
	}
	bins := []string{
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
		workload(t, "nofp-c"),
		workload(t, "nofp-cpp"),
		workload(t, "nofp-rust"),
		workload(t, "nofp-cgo"),
	}
	for _, b := range bins {
		t.Run(filepath.Base(b), func(t *testing.T) {
			if _, err := os.Stat(b); err != nil {
				t.Fatal(err)
			}
			compareWithReadelf(t, b)
		})
	}
}

// TestCRTSections checks the rows given to glibc's .init and .fini code,
// which has no CFI (see crtSections): the CFA is SP+8 at entry and at the
// ret, SP+16 between sub $8,%rsp and add $8,%rsp.
func TestCRTSections(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("crti/crtn rows are built on amd64 only")
	}
	bin := testenv.Workload(t, "nofp-cpp")
	f, tab := buildFile(t, bin)
	checked := 0
	for _, name := range []string{".init", ".fini"} {
		s := f.Section(name)
		if s == nil {
			continue
		}
		code, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		sub := bytes.Index(code, amd64SubRSP8)
		ret := len(code) - 1
		if sub < 0 || code[ret] != 0xc3 {
			t.Fatalf("%s of %s is not crti/crtn code: % x", name, bin, code)
		}
		for _, c := range []struct {
			off  int
			want int32
		}{{0, 8}, {sub + 4, 16}, {ret - 4, 16}, {ret, 8}} {
			row, ok := tab.Lookup(s.Addr + uint64(c.off))
			if !ok || row.Kind != KindCFA || row.CFAReg != RegSP || row.CFAOffset != c.want || row.RAOffset != -8 {
				t.Errorf("%s+%#x: %+v (found %v), want CFA = SP+%d, RA at CFA-8", name, c.off, row, ok, c.want)
			}
		}
		checked++
	}
	if checked != 2 {
		t.Fatalf("%s has %d of .init and .fini", bin, checked)
	}
}

// TestEntryEnd checks that the dynamic loader's entry point, which no CFI
// covers (glibc's RTLD_START), ends the stack: its return address into
// _start is the outermost frame of every process while ld.so runs.
func TestEntryEnd(t *testing.T) {
	var path string
	for _, p := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"} {
		if _, err := os.Stat(p); err == nil {
			path = p
		}
	}
	if path == "" {
		t.Skip("no glibc dynamic loader")
	}
	f, tab := buildFile(t, path)
	for _, pc := range []uint64{f.Entry, f.Entry + 7} {
		if row, ok := tab.Lookup(pc); !ok || row.Kind != KindEndOfStack {
			t.Errorf("%s entry %#x: row at %#x is %+v (found %v), want end of stack", path, f.Entry, pc, row, ok)
		}
	}
}

// buildFile opens the ELF file at path for the test and builds its table.
func buildFile(t *testing.T, path string) (*elf.File, *Table) {
	t.Helper()
	f, r := openELF(t, path)
	tab, err := Build(f, r)
	if err != nil {
		t.Fatalf("Build(%s): %v", path, err)
	}
	return f, tab
}

// TestGapCode checks the rows given to gcc's crtstuff functions, which have
// no CFI, against their symbols in a program built with symbols: the
// return address at the top of the stack throughout, or one word below it
// between __do_global_dtors_aux's push and pop of %rbp. libstdc++ (no
// symbols) has its one gap between FDEs covered the same way.
func TestGapCode(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("gap rows are built on amd64 only")
	}
	bin := testenv.Workload(t, "nofp-cpp")
	f, tab := buildFile(t, bin)
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	text := f.Section(".text")
	checked := 0
	for _, s := range syms {
		switch s.Name {
		case "deregister_tm_clones", "register_tm_clones", "frame_dummy", "__do_global_dtors_aux":
		default:
			continue
		}
		code := make([]byte, 64)
		if _, err := text.ReadAt(code, int64(s.Value-text.Addr)); err != nil {
			t.Fatal(err)
		}
		push, pop := -1, -1
		if s.Name == "__do_global_dtors_aux" {
			// endbr64; cmpb $0,x(%rip); jne; push %rbp ... pop %rbp; ret
			push = bytes.Index(code, []byte{0x75})
			if push < 0 || code[push+2] != 0x55 {
				t.Fatalf("__do_global_dtors_aux is not gcc's: % x", code)
			}
			push += 2
			pop = bytes.Index(code, []byte{0x5d, 0xc3})
		}
		for off := 0; off < 16; off++ {
			want := int32(8)
			if push >= 0 && off > push && off <= pop {
				want = 16
			}
			row, ok := tab.Lookup(s.Value + uint64(off))
			if !ok || row.Kind != KindCFA || row.CFAReg != RegSP || row.CFAOffset != want || row.RAOffset != -8 {
				t.Errorf("%s+%#x: %+v (found %v), want CFA = SP+%d, RA at CFA-8", s.Name, off, row, ok, want)
			}
		}
		if push >= 0 {
			for _, c := range []struct {
				off  int
				want int32
			}{{push, 8}, {push + 1, 16}, {pop, 16}, {pop + 1, 8}} {
				row, _ := tab.Lookup(s.Value + uint64(c.off))
				if row.Kind != KindCFA || row.CFAOffset != c.want {
					t.Errorf("%s+%#x: %+v, want CFA = SP+%d", s.Name, c.off, row, c.want)
				}
			}
		}
		checked++
	}
	if checked != 4 {
		t.Fatalf("%s has %d of gcc's 4 crtstuff functions", bin, checked)
	}
	lib := "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("no %s", lib)
	}
	_, ltab := buildFile(t, lib)
	if n := ltab.Stats().Unsupported[reasonNoCFI]; n != 0 {
		t.Errorf("%s: %d gaps between FDEs without rows, want its crtstuff covered", lib, n)
	}
}

// openELF opens path as the agent does: the *os.File is handed to Build
// beside the parsed file, so that its sections are mapped.
func openELF(t *testing.T, path string) (*elf.File, *os.File) {
	t.Helper()
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	f, err := elf.NewFile(r)
	if err != nil {
		t.Fatal(err)
	}
	return f, r
}
