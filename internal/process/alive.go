package process

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
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

// StartTime returns the start time of the process whose /proc directory is
// procDir (field 22 of its stat file, in clock ticks since boot), which
// tells a process from a later one with the same pid; 0 when the process
// is gone or the file malformed.
func StartTime(procDir string) uint64 {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return 0
	}
	// comm (field 2) is in parentheses and may hold anything: fields
	// resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0
	}
	v, err := strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
