package process

import (
	"bytes"
	"os"
	"path/filepath"
)

// Alive says whether the process whose /proc directory is procDir still
// runs: a zombie counts as gone (its mappings are gone with it).
func Alive(procDir string) bool {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
