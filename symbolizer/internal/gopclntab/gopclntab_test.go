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
