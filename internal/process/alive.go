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
	b := statAfterComm(procDir)
	return len(b) >= 2 && b[1] != 'Z' && b[1] != 'X'
}

// statAfterComm returns the stat file of the process whose /proc directory
// is procDir from just after its comm (field 2, in parentheses, which may
// hold anything: the fields resume after the last ')'), so from " STATE";
// nil when the process is gone or the file malformed.
func statAfterComm(procDir string) []byte {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return b[i+1:]
}

// StartTime returns the start time of the process whose /proc directory is
// procDir (field 22 of its stat file, in clock ticks since boot), which
// tells a process from a later one with the same pid; 0 when the process
// is gone or the file malformed.
func StartTime(procDir string) uint64 {
	fields := bytes.Fields(statAfterComm(procDir))
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
