package kallsyms

import (
	"os"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

const sample = `ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t do_one_initcall
ffffffff81002000 T schedule
ffffffff81003000 D some_data
ffffffff81004000 T _etext
ffffffffc0201000 t ftrace_trampoline	[__builtin__ftrace]
ffffffffc0a01000 t ext4_fill_super	[ext4]
ffffffffc0a02000 T ext4_iget	[ext4]
`

func TestLookup(t *testing.T) {
	tab, err := Parse(strings.NewReader(sample), map[string][2]uint64{"ext4": {0xffffffffc0a00000, 0xffffffffc0a10000}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr       uint64
		name, mod  string
		ok, inside bool
	}{
		{0xffffffff81002010, "schedule", "", true, true},
		{0xffffffff81003010, "schedule", "", true, true}, // data symbols are skipped
		{0xffffffff81004010, "", "", false, false},       // past _etext
		{0xffffffffc0a01100, "ext4_fill_super", "ext4", true, true},
		{0xffffffffc0a0f000, "ext4_iget", "ext4", true, true},
		{0xffffffffc0a10000, "", "", false, false}, // past the module
		{0x1000, "", "", false, false},
	} {
		s, mi, ok := tab.Lookup(tc.addr)
		if ok != tc.ok || s.Name != tc.name || s.Module != tc.mod || (mi >= 0) != tc.inside {
			t.Errorf("Lookup(%#x) = %+v, %d, %v; want %s [%s] %v", tc.addr, s, mi, ok, tc.name, tc.mod, tc.ok)
		}
	}
}

// TestBadModule: a module name must be bracketed, "[ext4]".
func TestBadModule(t *testing.T) {
	for _, line := range []string{
		"ffffffffc0a01000 t ext4_fill_super\text4]\n",
		"ffffffffc0a01000 t ext4_fill_super\t[ext4\n",
		"ffffffffc0a01000 t ext4_fill_super\t[]\n",
	} {
		if _, err := Parse(strings.NewReader(line), nil); err == nil || !strings.Contains(err.Error(), "bad module") {
			t.Errorf("%q: error %v, want bad module", line, err)
		}
	}
}

func TestKptrRestrict(t *testing.T) {
	if _, err := Parse(strings.NewReader("0000000000000000 T _stext\n"), nil); err == nil {
		t.Error("all-zero addresses accepted")
	}
}

func TestProcKallsyms(t *testing.T) {
	// Addresses read as zero for other users (kptr_restrict).
	testenv.RequireRoot(t)
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := Parse(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() < 10000 {
		t.Errorf("only %d text symbols", tab.Len())
	}
}

func FuzzParseLine(f *testing.F) {
	for _, l := range strings.Split(strings.TrimSpace(sample), "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, ok, err := ParseLine(line)
		if err != nil || !ok {
			return
		}
		if s.Name == "" {
			t.Fatalf("accepted %q with no name", line)
		}
		tab := build([]Symbol{s}, nil)
		if got, _, ok := tab.Lookup(s.Addr); !ok || got != s {
			t.Fatalf("Lookup(%#x) = %+v %v, want %+v", s.Addr, got, ok, s)
		}
	})
}
