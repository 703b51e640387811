package process

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReadProcFile: files of /proc and others read whole whatever their
// size against the pooled buffer's, a limit refused past it, and a
// missing file's error is os.ErrNotExist.
func TestReadProcFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 16 << 10, 16<<10 + 1, 200 << 10} {
		want := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, want, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadProcFile(path, 0)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%d bytes: read %d, %v", n, len(got), err)
		}
		if _, err := ReadProcFile(path, n); err != nil {
			t.Errorf("%d bytes with limit %d: %v", n, n, err)
		}
		if n > 1 { // a limit of 0 is none
			if _, err := ReadProcFile(path, n-1); !errors.Is(err, ErrTooLarge) {
				t.Errorf("%d bytes with limit %d: err %v, want ErrTooLarge", n, n-1, err)
			}
		}
	}
	self, err := ReadProcFile("/proc/self/maps", 0)
	if err != nil || !bytes.Contains(self, []byte("[stack]")) {
		t.Errorf("/proc/self/maps: %v\n%s", err, self)
	}
	if _, err := ReadProcFile(filepath.Join(dir, "none"), 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err %v, want os.ErrNotExist", err)
	}
}
