package elfsym

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// workload is testenv.Workload, by the name this package's tests call it.
var workload = testenv.Workload

// addr2line names addrs of file with `addr2line -f -e`.
func addr2line(t testing.TB, file string, addrs []uint64) []string {
	t.Helper()
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "%#x\n", a)
	}
	cmd := exec.Command(testenv.RequireTool(t, "addr2line"), "-f", "-e", file)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("addr2line: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	var names []string
	for i := 0; sc.Scan(); i++ {
		if i%2 == 0 {
			names = append(names, sc.Text())
		}
	}
	if len(names) != len(addrs) {
		t.Fatalf("addr2line gave %d names for %d addresses", len(names), len(addrs))
	}
	return names
}

// compareWithAddr2line samples addresses every stride bytes of the
// executable sections of file and checks that Lookup agrees with addr2line
// on at least 99.5% of them.
func compareWithAddr2line(t *testing.T, file, symFile string, stride uint64) {
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sf, err := elf.Open(symFile)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	tab, err := New(sf)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []uint64
	for _, s := range f.Sections {
		if s.Flags&elf.SHF_EXECINSTR == 0 || s.Name == ".plt" || s.Name == ".plt.got" || s.Name == ".plt.sec" {
			continue
		}
		for a := s.Addr; a < s.Addr+s.Size; a += stride {
			addrs = append(addrs, a)
		}
	}
	want := addr2line(t, file, addrs)
	same, named := 0, 0
	for i, a := range addrs {
		got, _, ok := tab.Lookup(a)
		if !ok {
			got = "??"
		}
		if got == want[i] {
			same++
			if ok {
				named++
			}
		} else if testing.Verbose() {
			t.Logf("%#x: got %s, addr2line %s", a, got, want[i])
		}
	}
	rate := float64(same) / float64(len(addrs))
	t.Logf("%s: %d/%d addresses (%d named) agree with addr2line: %.2f%%", filepath.Base(file), same, len(addrs), named, 100*rate)
	if rate < 0.995 {
		t.Errorf("%s: only %.2f%% agree with addr2line, want >= 99.5%%", file, 100*rate)
	}
	if named < len(addrs)/2 {
		t.Errorf("%s: only %d of %d addresses named", file, named, len(addrs))
	}
}

func TestAgainstAddr2lineC(t *testing.T) {
	// Without debug information addr2line uses the symbol table.
	bin := workload(t, "symtest-c-nodebug")
	compareWithAddr2line(t, bin, bin, 3)
}

func TestAgainstAddr2lineDebugFile(t *testing.T) {
	// libc has only .dynsym; addr2line finds the .symtab of its separate
	// debug file by build id, and so can we.
	libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"
	f, err := elf.Open(libc)
	if err != nil {
		t.Skipf("no libc to compare: %v", err)
	}
	id := process.BuildID(f)
	f.Close()
	debug := fmt.Sprintf("/usr/lib/debug/.build-id/%s/%s.debug", id[:2], id[2:])
	testenv.RequireTool(t, "/usr/lib/debug/.build-id")
	if _, err := os.Stat(debug); err != nil {
		t.Fatalf("no separate debug file for libc: it comes with the Debian package libc6-dbg, which must match libc6's version: %v", err)
	}
	// Strip its DWARF (and the ids that would lead addr2line back to it) so
	// that addr2line, too, names addresses by the symbol table.
	syms := filepath.Join(t.TempDir(), "libc.syms")
	if out, err := exec.Command(testenv.RequireTool(t, "objcopy"), "--strip-debug", "--remove-section=.note.gnu.build-id",
		"--remove-section=.gnu_debuglink", debug, syms).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	compareWithAddr2line(t, syms, syms, 61)
}

func TestDynsym(t *testing.T) {
	// libc has only .dynsym; there gaps are local functions, which neither
	// addr2line nor we can name.
	libc := "/usr/lib/x86_64-linux-gnu/libc.so.6"
	if _, err := os.Stat(libc); err != nil {
		t.Skipf("no %s: %v", libc, err)
	}
	f, err := elf.Open(libc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	if !tab.Dynamic {
		t.Skip("libc has a .symtab here")
	}
	// Every sized dynamic function symbol (as debug/elf reads it) names
	// the middle of its body, up to aliases; past its end there is nothing.
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || s.Section == elf.SHN_UNDEF {
			continue
		}
		name, start, ok := tab.Lookup(s.Value + s.Size/2)
		if !ok || start != s.Value {
			t.Errorf("Lookup(%#x) in %s = %q at %#x, %v", s.Value+s.Size/2, s.Name, name, start, ok)
		}
		checked++
	}
	if checked < 1000 {
		t.Errorf("checked only %d libc functions", checked)
	}
}

func FuzzParse(f *testing.F) {
	// Seeds: the real symbol table of the test binary, 64- and 32-bit views.
	if file, err := elf.Open(workload(f, "symtest-c-nodebug")); err == nil {
		for _, s := range file.Sections {
			if s.Type == elf.SHT_SYMTAB {
				sd, _ := s.Data()
				st, _ := file.Sections[s.Link].Data()
				f.Add(sd[:min(len(sd), 24*64)], st[:min(len(st), 2048)], true)
			}
		}
		file.Close()
	}
	f.Add(make([]byte, 48), []byte("\x00main\x00"), false)
	secs := []Section{{}, {Addr: 0x1000, Size: 0x1000, Exec: true}, {Addr: 0x2000, Size: 0x100}}
	f.Fuzz(func(t *testing.T, symData, strData []byte, is64 bool) {
		class := elf.ELFCLASS32
		if is64 {
			class = elf.ELFCLASS64
		}
		tab, err := Parse(symData, strData, class, binaryOrder, secs, false)
		if err != nil {
			return
		}
		for i := 0; i < tab.Len(); i++ {
			name, start, end := tab.Symbol(i)
			if end <= start || start < 0x1000 || start >= 0x2000 {
				t.Fatalf("symbol %q [%#x,%#x) outside the executable section", name, start, end)
			}
			if got, s, ok := tab.Lookup(start); !ok || s != start || got != name {
				t.Fatalf("Lookup(%#x) = %q %#x %v, want %q", start, got, s, ok, name)
			}
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	f, err := elf.Open(workload(b, "symtest-c-nodebug"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tab, err := New(f)
	if err != nil {
		b.Fatal(err)
	}
	_, lo, _ := tab.Symbol(0)
	_, _, hi := tab.Symbol(tab.Len() - 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab.Lookup(lo + uint64(i*7919)%(hi-lo))
	}
}

var binaryOrder = binary.LittleEndian
