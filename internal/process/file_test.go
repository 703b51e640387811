package process

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// copyFile copies src to a new file in dir and returns its path.
func copyFile(t testing.TB, src, dir, name string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

func adopt(t *testing.T, c *Files, path string) (*File, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return c.Adopt(f, path)
}

// TestFilesOnce: a file opened twice (by two users, or for two processes)
// is parsed once, and the same File comes back, by its stat and by its
// device and inode; its content key is its build id.
func TestFilesOnce(t *testing.T) {
	exe := copyFile(t, "/usr/bin/true", t.TempDir(), "true")
	c := NewFiles(0)
	defer c.Close()
	a, err := adopt(t, c, exe)
	if err != nil {
		t.Fatal(err)
	}
	b, err := adopt(t, c, exe)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("two Files for one file")
	}
	if st := c.Stats(); st.Parses != 1 || st.Hits != 1 || st.Opens != 2 || st.Open != 1 {
		t.Errorf("stats %+v, want 1 parse, 1 hit, 2 opens, 1 open", st)
	}
	if want := readelfBuildID(t, exe); a.BuildID != want || a.ContentKey != "build-id:"+want {
		t.Errorf("BuildID %q, ContentKey %q; readelf says %q", a.BuildID, a.ContentKey, want)
	}
	if len(a.Loads) == 0 || a.ELF == nil || a.IsGo {
		t.Errorf("parsed file %+v", a)
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := FileInode(fi)
	if got := c.ByInode(in); got != a {
		t.Errorf("ByInode(%v) = %p, want %p", in, got, a)
	} else {
		c.Release(got)
	}
	c.Release(a)
	c.Release(b)
	if got := c.ByInode(in); got != a {
		t.Errorf("an unheld file was closed before its linger")
	} else {
		c.Release(got)
	}
}

// TestFilesLinger: a file no user holds is closed after the linger, and
// opened and parsed again when asked for after that; the idle files are
// bounded in number.
func TestFilesLinger(t *testing.T) {
	dir := t.TempDir()
	c := NewFiles(time.Millisecond)
	defer c.Close()
	exe := copyFile(t, "/usr/bin/true", dir, "true")
	a, err := adopt(t, c, exe)
	if err != nil {
		t.Fatal(err)
	}
	c.Release(a)
	time.Sleep(5 * time.Millisecond)
	b, err := adopt(t, c, exe)
	if err != nil {
		t.Fatal(err)
	}
	if b == a || c.Stats().Parses != 2 {
		t.Errorf("a file idle past its linger was not closed: %+v", c.Stats())
	}
	if _, err := a.ReaderAt().ReadAt(make([]byte, 4), 0); err == nil {
		t.Errorf("the closed file still reads")
	}
	c.Release(b)

	c = NewFiles(time.Hour)
	defer c.Close()
	c.maxIdle = 2
	for i := range 5 {
		pf, err := adopt(t, c, copyFile(t, "/usr/bin/true", dir, "true"+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		c.Release(pf)
	}
	if n := c.Stats().Open; n > 3 {
		t.Errorf("%d files open, want at most maxIdle (2) + 1", n)
	}
}

// TestFilesNotELF: a file that is not ELF gives ErrNotELF, is counted, and
// is not parsed again when asked for again (a script interpreter's mapping,
// on a host that runs it a thousand times).
func TestFilesNotELF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewFiles(0)
	defer c.Close()
	for range 2 {
		if _, err := adopt(t, c, path); !errors.Is(err, ErrNotELF) {
			t.Fatalf("err = %v, want ErrNotELF", err)
		}
	}
	if st := c.Stats(); st.Parses != 1 || st.ParseErrors != 1 || st.Open != 0 {
		t.Errorf("stats %+v, want 1 parse, 1 parse error, none open", st)
	}
}

// TestFilesConcurrent: users opening and releasing the same files at once
// (the symbolizer and the table worker's builders) share them; run with
// -race.
func TestFilesConcurrent(t *testing.T) {
	dir := t.TempDir()
	paths := []string{copyFile(t, "/usr/bin/true", dir, "a"), copyFile(t, "/usr/bin/true", dir, "b")}
	c := NewFiles(time.Millisecond)
	defer c.Close()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				f, err := os.Open(paths[(g+i)%2])
				if err != nil {
					t.Error(err)
					return
				}
				pf, err := c.Adopt(f, f.Name())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := pf.ReaderAt().ReadAt(make([]byte, 4), 0); err != nil {
					t.Errorf("a held file does not read: %v", err)
				}
				c.Release(pf)
			}
		}()
	}
	wg.Wait()
}

// TestFilesVDSO: the vDSO is parsed once and named by its build id.
func TestFilesVDSO(t *testing.T) {
	c := NewFiles(0)
	defer c.Close()
	a, err := c.VDSO()
	if err != nil {
		t.Skipf("no vDSO: %v", err)
	}
	b, _ := c.VDSO()
	if a != b || a.ContentKey == "" || a.Path != "[vdso]" {
		t.Errorf("vDSO files %p %p, key %q", a, b, a.ContentKey)
	}
	c.Release(a) // never closed
	if _, err := a.ReaderAt().ReadAt(make([]byte, 4), 0); err != nil {
		t.Errorf("vDSO image: %v", err)
	}
}

// FuzzParseFile parses mutated ELF files as Files.Adopt does for every file
// a process on the host maps. Guard turns a panic into a counted, skipped
// file; this target fails on a panic raised in Scorch's own code (the
// build-id readers), which Guard would hide, and accepts those of
// debug/elf, which Guard contains.
func FuzzParseFile(f *testing.F) {
	// The vDSO: a small ELF file with a build id and loadable segments
	// (a program of tens of kilobytes makes the fuzzer spend its time
	// minimizing).
	if img, err := VDSO(); err == nil {
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := parseFile(bytes.NewReader(data), nil, "fuzz")
		var pe *ParseError
		if errors.As(err, &pe) {
			if site := panicSite(pe.Stack); strings.HasPrefix(site, "github.com/scorch-profiler/scorch/") {
				t.Fatalf("panic in %s: %v\n%s", site, pe.Panic, pe.Stack)
			}
			return
		}
		if err == nil && (len(pf.Loads) == 0 || (pf.BuildID == "") != (pf.ContentKey == "")) {
			t.Fatalf("parsed file without loads or with a key %q for build id %q", pf.ContentKey, pf.BuildID)
		}
	})
}

// panicSite is the function that raised the panic whose stack (as
// debug.Stack prints it) is stack: the first function after the panic
// that is not the runtime's.
func panicSite(stack string) string {
	lines := strings.Split(stack, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "panic(") {
			continue
		}
		for _, l := range lines[i+1:] {
			if strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "runtime.") {
				continue
			}
			if j := strings.LastIndex(l, "("); j > 0 {
				return l[:j]
			}
		}
	}
	return ""
}
