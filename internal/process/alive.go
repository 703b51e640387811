package process

import (
	"bytes"
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
	b, err := ReadProcFile(filepath.Join(procDir, "stat"), 0)
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

// pfKthread is PF_KTHREAD of the kernel's task flags (field 9 of stat).
const pfKthread = 0x00200000

// KernelThread says whether the process whose /proc directory is procDir
// is a kernel thread (PF_KTHREAD among the flags of its stat file); false
// when it is gone or the file malformed. Its exe link cannot be read, like
// a zombie's: this tells them apart.
func KernelThread(procDir string) bool {
	fields := bytes.Fields(statAfterComm(procDir))
	// fields[0] is field 3 (state); field 9 (flags) is fields[6].
	if len(fields) < 7 {
		return false
	}
	v, err := strconv.ParseUint(string(fields[6]), 10, 64)
	return err == nil && v&pfKthread != 0
}
