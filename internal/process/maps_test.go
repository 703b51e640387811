package process

import (
	"bufio"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want Mapping
	}{
		{
			"5618ea609000-5618ea60e000 r-xp 00002000 fe:00 247026                     /usr/bin/cat",
			Mapping{Start: 0x5618ea609000, End: 0x5618ea60e000, Perm: Read | Exec, Offset: 0x2000, Dev: 0xfe << 32, Inode: 247026, Path: "/usr/bin/cat"},
		},
		{
			"7f2c21742000-7f2c21764000 rw-p 00000000 00:00 0 ",
			Mapping{Start: 0x7f2c21742000, End: 0x7f2c21764000, Perm: Read | Write},
		},
		{
			"7f2c21742000-7f2c21764000 rw-p 00000000 00:00 0",
			Mapping{Start: 0x7f2c21742000, End: 0x7f2c21764000, Perm: Read | Write},
		},
		{
			"7ffd1c9f0000-7ffd1c9f2000 r-xp 00000000 00:00 0                          [vdso]",
			Mapping{Start: 0x7ffd1c9f0000, End: 0x7ffd1c9f2000, Perm: Read | Exec, Path: "[vdso]"},
		},
		{
			"7ffd1c9f0000-7ffd1c9f2000 rw-p 00000000 00:00 0                          [stack]",
			Mapping{Start: 0x7ffd1c9f0000, End: 0x7ffd1c9f2000, Perm: Read | Write, Path: "[stack]"},
		},
		{
			"7f0000000000-7f0000001000 rwxp 00000000 00:00 0   [anon:v8 code space]",
			Mapping{Start: 0x7f0000000000, End: 0x7f0000001000, Perm: Read | Write | Exec, Path: "[anon:v8 code space]"},
		},
		{
			"400000-401000 r-xp 00001000 08:01 1234 /tmp/my prog (deleted)",
			Mapping{Start: 0x400000, End: 0x401000, Perm: Read | Exec, Offset: 0x1000, Dev: 8<<32 | 1, Inode: 1234, Path: "/tmp/my prog", Deleted: true},
		},
		{
			"7f1000000000-7f1000002000 r-xs 00000000 00:01 77 /memfd:jit (deleted)",
			Mapping{Start: 0x7f1000000000, End: 0x7f1000002000, Perm: Read | Exec | Shared, Dev: 1, Inode: 77, Path: "/memfd:jit", Deleted: true},
		},
		{
			"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
			Mapping{Start: 0xffffffffff600000, End: 0xffffffffff601000, Perm: Exec, Path: "[vsyscall]"},
		},
	}
	for _, tt := range tests {
		got, err := ParseLine(tt.line)
		if err != nil {
			t.Errorf("ParseLine(%q): %v", tt.line, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseLine(%q)\n got %+v\nwant %+v", tt.line, got, tt.want)
		}
	}
}

func TestMappingKinds(t *testing.T) {
	memfd, _ := ParseLine("7f1000000000-7f1000002000 r-xs 00000000 00:01 77 /memfd:jit (deleted)")
	if !memfd.Memfd() || memfd.Anonymous() || memfd.Pseudo() {
		t.Errorf("memfd mapping: Memfd=%v Anonymous=%v Pseudo=%v", memfd.Memfd(), memfd.Anonymous(), memfd.Pseudo())
	}
	vdso, _ := ParseLine("7ffd1c9f0000-7ffd1c9f2000 r-xp 00000000 00:00 0 [vdso]")
	if !vdso.Pseudo() || !vdso.Anonymous() || !vdso.Exec() {
		t.Errorf("vdso mapping: Pseudo=%v Anonymous=%v Exec=%v", vdso.Pseudo(), vdso.Anonymous(), vdso.Exec())
	}
}

func TestParseLineErrors(t *testing.T) {
	for _, line := range []string{
		"",
		"zzzz-1000 r-xp 0 00:00 0",
		"1000 r-xp 0 00:00 0",
		"2000-1000 r-xp 0 00:00 0",
		"1000-2000 r-x 0 00:00 0",
		"1000-2000 rqxp 0 00:00 0",
		"1000-2000 r-xp 0 0000 0",
		"1000-2000 r-xp 0 00:00",
		"1000-2000 r-xp 0 00:00 -1",
		"1000-2000 r-xp 11112222333344445 00:00 0",
	} {
		if m, err := ParseLine(line); err == nil {
			t.Errorf("ParseLine(%q) = %+v, want error", line, m)
		}
	}
}

func TestReadMapsSelf(t *testing.T) {
	ms, err := ReadMaps("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	found, vdso := false, false
	for _, m := range ms {
		if m.Path == exe && m.Exec() {
			found = true
		}
		if m.Path == "[vdso]" {
			vdso = m.Exec()
		}
	}
	if !found || !vdso {
		t.Errorf("/proc/self/maps: executable mapping of %s found: %v, executable [vdso] found: %v\n%+v", exe, found, vdso, ms)
	}
	if _, err := ReadMaps("/proc/no-such-pid"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadMaps of a missing process: %v, want os.ErrNotExist", err)
	}
}

func TestParseStopsAtBadLine(t *testing.T) {
	in := "1000-2000 r-xp 00000000 00:00 0 /a\nbogus\n3000-4000 r-xp 0 00:00 0 /b\n"
	ms, err := ParseMaps(strings.NewReader(in))
	var me *MapsError
	if !errors.As(err, &me) || me.Line != 2 || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("ParseMaps error = %v, want a *MapsError naming line 2", err)
	}
	if len(ms) != 1 || ms[0].Path != "/a" {
		t.Errorf("ParseMaps returned %+v, want the first mapping", ms)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("5618ea609000-5618ea60e000 r-xp 00002000 fe:00 247026                     /usr/bin/cat")
	f.Add("7ffd1c9f0000-7ffd1c9f2000 r-xp 00000000 00:00 0                          [vdso]")
	f.Add("400000-401000 r-xp 00001000 08:01 1234 /tmp/my prog (deleted)")
	f.Add("7f2c21742000-7f2c21764000 rw-p 00000000 00:00 0 ")
	f.Fuzz(func(t *testing.T, line string) {
		m, err := ParseLine(line)
		if err != nil {
			return
		}
		if m.End < m.Start {
			t.Fatalf("accepted inverted range %+v from %q", m, line)
		}
		if m.Deleted && strings.HasSuffix(line, " (deleted)") == false {
			t.Fatalf("Deleted set for %q", line)
		}
	})
}

func FuzzParseMaps(f *testing.F) {
	f.Add("5618ea609000-5618ea60e000 r-xp 00002000 fe:00 247026                     /usr/bin/cat\n" +
		"7ffd1c9f0000-7ffd1c9f2000 r-xp 00000000 00:00 0                          [vdso]\n")
	f.Add("400000-401000 r-xp 00001000 08:01 1234 /tmp/my prog (deleted)\n\n7f2c21742000-7f2c21764000 rw-p 00000000 00:00 0 \n")
	f.Add("1000-2000 r-xp 00000000 00:00 0 /a\nbogus\n")
	if data, err := os.ReadFile("/proc/self/maps"); err == nil {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, in string) {
		ms, err := ParseMaps(strings.NewReader(in))
		var me *MapsError
		if err != nil && errors.As(err, &me) && (me.Line < 1 || me.Line > strings.Count(in, "\n")+1) {
			t.Fatalf("error names line %d of a %d-line input: %v", me.Line, strings.Count(in, "\n")+1, err)
		}
		// The mappings are the input's non-blank lines, in order, each
		// parsed alone to the same result.
		sc := bufio.NewScanner(strings.NewReader(in))
		sc.Buffer(nil, maxLine)
		i := 0
		for sc.Scan() && i < len(ms) {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			want, err := ParseLine(sc.Text())
			if err != nil || ms[i] != want {
				t.Fatalf("mapping %d = %+v, but its line %q parses alone to %+v, %v", i, ms[i], sc.Text(), want, err)
			}
			if ms[i].End < ms[i].Start {
				t.Fatalf("accepted inverted range %+v", ms[i])
			}
			i++
		}
		if i != len(ms) {
			t.Fatalf("%d mappings from %d lines", len(ms), i)
		}
	})
}
