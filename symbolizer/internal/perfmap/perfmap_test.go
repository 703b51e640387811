package perfmap

import (
	"strings"
	"testing"
)

func TestAppend(t *testing.T) {
	var tab Table
	in := "1000 100 LazyCompile:~foo file.js:1\n0x2000 0x10 bar\nbogus\n1050 20 JS:*foo file.js:1\n3000 10 partial"
	n, bad, err := tab.Append(strings.NewReader(in))
	if err != nil || bad != 1 {
		t.Fatalf("Append: bad %d err %v", bad, err)
	}
	if want := int64(len(in) - len("3000 10 partial")); n != want {
		t.Errorf("consumed %d, want %d (the partial line is left)", n, want)
	}
	for _, tc := range []struct {
		addr uint64
		name string
	}{
		{0x1000, ""}, // older region replaced by the overlapping newer one
		{0x1050, "JS:*foo file.js:1"},
		{0x106f, "JS:*foo file.js:1"},
		{0x2008, "bar"},
		{0x2010, ""},
		{0x3005, ""},
	} {
		e, ok := tab.Lookup(tc.addr)
		if e.Name != tc.name || ok != (tc.name != "") {
			t.Errorf("Lookup(%#x) = %+v %v, want %q", tc.addr, e, ok, tc.name)
		}
	}
	// The rest of the file arrives.
	if _, _, err := tab.Append(strings.NewReader("3000 10 partial\n")); err != nil {
		t.Fatal(err)
	}
	if e, ok := tab.Lookup(0x3005); !ok || e.Name != "partial" {
		t.Errorf("after growth: %+v %v", e, ok)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("1000 100 LazyCompile:~foo file.js:1")
	f.Add("0x7f0012345000 0x40 JS:*hot [eval]:1:23")
	f.Add("7f0012345000 40 stub")
	f.Fuzz(func(t *testing.T, line string) {
		e, err := ParseLine(line)
		if err != nil {
			return
		}
		var tab Table
		tab.merge([]Entry{e})
		if got, ok := tab.Lookup(e.Start); e.Size > 0 && (!ok || got != e) {
			t.Fatalf("Lookup(%#x) = %+v %v, want %+v", e.Start, got, ok, e)
		}
	})
}

func FuzzAppend(f *testing.F) {
	f.Add([]byte("1000 100 a\n1050 20 b\n2000 10 c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tab Table
		tab.Append(strings.NewReader(string(data)))
		for i := 1; i < len(tab.entries); i++ {
			p, e := tab.entries[i-1], tab.entries[i]
			if p.Start+p.Size > e.Start {
				t.Fatalf("overlap %+v %+v", p, e)
			}
		}
	})
}
