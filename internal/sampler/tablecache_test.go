package sampler

import (
	"bytes"
	"debug/elf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/process"
)

func TestTableCache(t *testing.T) {
	dir := t.TempDir()
	c, err := newTableCache(dir, 3000, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	rows := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 100) // 100 rows, 800 bytes
	if _, _, ok := c.get("build-id:aa"); ok {
		t.Fatal("hit in an empty cache")
	}
	c.put("build-id:aa", rows, 0x400000)
	got, adj, ok := c.get("build-id:aa")
	if !ok || adj != 0x400000 || !bytes.Equal(got, rows) {
		t.Fatalf("get after put: ok %v adj %#x, %d bytes", ok, adj, len(got))
	}
	// Keys of files on this host only are not cached.
	c.put("f:803:1234:5:6", rows, 0)
	if _, _, ok := c.get("f:803:1234:5:6"); ok {
		t.Error("a host-local key was cached")
	}
	// Another build of Scorch does not read this one's tables.
	other := *c
	other.version = "another"
	if _, _, ok := other.get("build-id:aa"); ok {
		t.Error("a table of another build was read")
	}
	// A corrupt entry is dropped, not trusted.
	p := c.path("build-id:aa")
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 0xff
	os.WriteFile(p, b, 0o600)
	if _, _, ok := c.get("build-id:aa"); ok {
		t.Error("a corrupt table was read")
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("the corrupt entry is still there: %v", err)
	}
	// Truncated, and with a row count past the bound.
	c.put("build-id:bb", rows, 0)
	p = c.path("build-id:bb")
	b, _ = os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-3], 0o600)
	if _, _, ok := c.get("build-id:bb"); ok {
		t.Error("a truncated table was read")
	}
	copy(b[len(tableCacheMagic)+8:], []byte{0xff, 0xff, 0xff, 0xff})
	os.WriteFile(p, b, 0o600)
	if _, _, ok := c.get("build-id:bb"); ok {
		t.Error("a table with 2^32-1 rows was read")
	}
	// The bound: 3000 bytes hold three tables of 800 rows' bytes plus
	// headers; the least recently used go first.
	for _, k := range []string{"build-id:1", "build-id:2", "build-id:3", "build-id:4"} {
		c.put(k, rows, 0)
	}
	var total int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.tab"))
	for _, f := range files {
		fi, _ := os.Stat(f)
		total += fi.Size()
	}
	if total > 3000 {
		t.Errorf("cache holds %d bytes, bound 3000", total)
	}
	if _, _, ok := c.get("build-id:4"); !ok {
		t.Error("the newest table was evicted")
	}
}

// TestBuildVersionNamesTheCode checks that the cache's build version holds
// the running executable's Go build id, which changes with its code: a
// build without VCS stamping (go build -buildvcs=false) reads tables from
// its own code only.
func TestBuildVersionNamesTheCode(t *testing.T) {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id := process.GoBuildID(f)
	if id == "" {
		t.Fatal("the test binary has no Go build id")
	}
	if v := buildVersion(); !strings.HasSuffix(v, ","+id) {
		t.Errorf("buildVersion() = %q, want it to end with the Go build id %q", v, id)
	}
}
