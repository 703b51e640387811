package gopclntab

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// workload is testenv.Workload, by the name this package's tests call it.
var workload = testenv.Workload

func open(t testing.TB, name string) (*Table, *elf.File) {
	t.Helper()
	osf, err := os.Open(workload(t, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { osf.Close() })
	f, err := elf.NewFile(osf)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := Open(f, osf)
	if err != nil {
		t.Fatal(err)
	}
	if !tab.mapped {
		t.Errorf("%s: the pclntab was copied, not mapped", name)
	}
	return tab, f
}

// sampleAddrs returns addresses inside the functions of the unstripped
// build (the stripped twin has the same layout), every stride bytes.
func sampleAddrs(t testing.TB, f *elf.File, stride uint64) []uint64 {
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []uint64
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 {
			continue
		}
		for a := s.Value; a < s.Value+s.Size; a += stride {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

func TestStrippedAgainstGoToolAddr2line(t *testing.T) {
	tab, _ := open(t, "symtest-go-stripped")
	_, full := open(t, "symtest-go")
	if !tab.HasInlining() {
		t.Error("stripped binary: inline trees not found (moduledata scan failed)")
	}
	addrs := sampleAddrs(t, full, 37)
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "%#x\n", a)
	}
	cmd := exec.Command("go", "tool", "addr2line", workload(t, "symtest-go"))
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool addr2line: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	same := 0
	var buf []Frame
	for i := 0; sc.Scan(); i++ {
		name := sc.Text()
		sc.Scan()
		pos := sc.Text()
		buf = tab.Resolve(addrs[i], buf[:0])
		got, gotPos := "?", "?:0"
		if len(buf) > 0 {
			// go tool addr2line names the outermost function and the
			// innermost position.
			got = buf[len(buf)-1].Function
			gotPos = fmt.Sprintf("%s:%d", buf[0].File, buf[0].Line)
		}
		if got == name && gotPos == pos {
			same++
		} else if testing.Verbose() {
			t.Logf("%#x: got %s %s, go tool addr2line %s %s", addrs[i], got, gotPos, name, pos)
		}
	}
	t.Logf("%d/%d sampled addresses agree with go tool addr2line", same, len(addrs))
	if same != len(addrs) {
		t.Errorf("%d of %d addresses differ from go tool addr2line", len(addrs)-same, len(addrs))
	}
}

// TestInlining compares the inline chains of the stripped build with those
// llvm-symbolizer reads from the DWARF of the unstripped twin.
func TestInlining(t *testing.T) {
	sym := testenv.RequireTool(t, "llvm-symbolizer")
	tab, _ := open(t, "symtest-go-stripped")
	_, full := open(t, "symtest-go")
	var addrs []uint64
	for _, a := range sampleAddrs(t, full, 1) {
		if fr := tab.Resolve(a, nil); len(fr) > 0 && strings.HasPrefix(fr[len(fr)-1].Function, "main.") {
			addrs = append(addrs, a)
		}
	}
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "%#x\n", a)
	}
	cmd := exec.Command(sym, "--inlining", "--functions=linkage", "--obj="+workload(t, "symtest-go"))
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llvm-symbolizer: %v", err)
	}
	blocks := strings.Split(strings.TrimSpace(string(out)), "\n\n")
	if len(blocks) != len(addrs) {
		t.Fatalf("llvm-symbolizer: %d answers for %d addresses", len(blocks), len(addrs))
	}
	same, inlined := 0, 0
	for i, b := range blocks {
		lines := strings.Split(b, "\n")
		var want []string
		for j := 0; j+1 < len(lines); j += 2 {
			want = append(want, lines[j]+" "+filepath.Base(strings.SplitN(lines[j+1], ":", 3)[0])+":"+strings.SplitN(lines[j+1], ":", 3)[1])
		}
		var got []string
		for _, fr := range tab.Resolve(addrs[i], nil) {
			got = append(got, fmt.Sprintf("%s %s:%d", fr.Function, filepath.Base(fr.File), fr.Line))
		}
		if len(got) > 1 {
			inlined++
		}
		if strings.Join(got, "|") == strings.Join(want, "|") {
			same++
		} else if testing.Verbose() {
			t.Logf("%#x: got %q, DWARF %q", addrs[i], got, want)
		}
	}
	t.Logf("%d/%d addresses of main agree with DWARF, %d with inlined frames", same, len(addrs), inlined)
	if inlined == 0 {
		t.Error("no inlined frames found in main.hot, which inlines step and mix")
	}
	if float64(same) < 0.99*float64(len(addrs)) {
		t.Errorf("only %d of %d inline chains agree with DWARF", same, len(addrs))
	}
}

func FuzzParse(f *testing.F) {
	if file, err := elf.Open(workload(f, "symtest-go-stripped")); err == nil {
		if s := file.Section(".gopclntab"); s != nil {
			data, _ := s.Data()
			f.Add(data[:min(len(data), 4096)], uint64(0x401000), uint64(0x1000))
		}
		file.Close()
	}
	f.Add([]byte("\xf1\xff\xff\xff\x00\x00\x01\x08"), uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, text, pc uint64) {
		tab, err := Parse(data, text, binary.LittleEndian)
		if err != nil {
			return
		}
		tab.gofunc = data // let the inline walk read hostile bytes too
		for _, fr := range tab.Resolve(pc, nil) {
			_ = fr
		}
		tab.Resolve(text+pc%4096, nil)
	})
}

func BenchmarkResolve(b *testing.B) {
	tab, full := open(b, "symtest-go-stripped")
	_, f := open(b, "symtest-go")
	_ = full
	addrs := sampleAddrs(b, f, 13)
	buf := make([]Frame, 0, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf = tab.Resolve(addrs[i%len(addrs)], buf[:0])
	}
}

// TestFuncs checks the functions of the stripped build against the symbol
// table of its unstripped twin, and their SP deltas against the machine
// code: 0 at every entry, 8 right after a PUSHQ BP prologue.
func TestFuncs(t *testing.T) {
	osf, err := os.Open(workload(t, "symtest-go-stripped"))
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	ef, err := elf.NewFile(osf)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := OpenFuncs(ef, osf)
	if err != nil {
		t.Fatal(err)
	}
	_, full := open(t, "symtest-go")
	syms, err := full.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[uint64][]string{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			byAddr[s.Value] = append(byAddr[s.Value], strings.TrimSuffix(s.Name, ".abi0"))
		}
	}
	text := ef.Section(".text")
	code, err := text.Data()
	if err != nil {
		t.Fatal(err)
	}
	var sp []SPDelta
	n, named, pushes := 0, 0, 0
	for f, err := range tab.Funcs() {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if slices.Contains(byAddr[f.Entry], strings.ReplaceAll(f.Name, "·", ".")) {
			named++
		} else {
			t.Errorf("%s at %#x: the symbol table has %q there", f.Name, f.Entry, byAddr[f.Entry])
		}
		if sp, err = tab.AppendSP(sp[:0], &f); err != nil {
			t.Fatal(err)
		}
		if len(sp) == 0 {
			continue
		}
		if sp[0].Lo != f.Entry || sp[0].Delta != 0 {
			t.Errorf("%s: first SP delta %+v, want 0 from the entry %#x", f.Name, sp[0], f.Entry)
		}
		for i := 1; i < len(sp); i++ {
			if sp[i].Lo != sp[i-1].Hi {
				t.Errorf("%s: SP deltas %+v and %+v leave a gap", f.Name, sp[i-1], sp[i])
			}
		}
		for _, d := range sp {
			if d.Delta == 8 && d.Lo > f.Entry && code[d.Lo-1-text.Addr] == 0x55 {
				pushes++ // PUSHQ BP: 8 bytes pushed
			}
		}
	}
	t.Logf("%d functions, %d named as in the symbol table, %d PUSHQ BP prologues", n, named, pushes)
	if n != tab.NumFuncs() || n < 1000 || pushes < n/4 {
		t.Errorf("%d functions of %d, %d PUSHQ BP prologues", n, tab.NumFuncs(), pushes)
	}
}

func FuzzPCSP(f *testing.F) {
	f.Add([]byte{0x02, 0x05, 0x10, 0x20, 0x0f, 0x03, 0x00}, uint64(0x100))
	f.Add([]byte{0x01, 0x01, 0x00}, uint64(1))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01}, uint64(1<<40))
	f.Fuzz(func(t *testing.T, p []byte, size uint64) {
		fn := &Func{Entry: 0x401000, End: 0x401000 + size%(1<<32), Name: "f"}
		sp, err := decodePCSP(nil, p, 0, fn, 1)
		if err != nil {
			return
		}
		pc := fn.Entry
		for _, d := range sp {
			if d.Lo != pc || d.Hi <= d.Lo || d.Hi > fn.End {
				t.Fatalf("bad piece %+v after %#x in %#x..%#x", d, pc, fn.Entry, fn.End)
			}
			pc = d.Hi
		}
	})
}

func FuzzFuncs(f *testing.F) {
	if file, err := elf.Open(workload(f, "symtest-go-stripped")); err == nil {
		if s := file.Section(".gopclntab"); s != nil {
			data, _ := s.Data()
			f.Add(data[:min(len(data), 8192)])
		}
		file.Close()
	}
	f.Add([]byte("\xfa\xff\xff\xff\x00\x00\x01\x08"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(data, 0x401000, binary.LittleEndian)
		if err != nil {
			return
		}
		var sp []SPDelta
		for fn, err := range tab.Funcs() {
			if err == nil {
				sp, _ = tab.AppendSP(sp[:0], &fn)
			}
		}
	})
}
