package process

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// OpenMapped opens the file behind mapping m of the process whose /proc
// directory is procDir: through procDir/map_files/START-END, the very file
// mapped even if it was deleted or replaced since or lives in another
// mount namespace (opening it needs CAP_SYS_ADMIN, or CAP_CHECKPOINT_RESTORE
// since Linux 5.9),
// else through the process's root, procDir/root/PATH. The file must be a
// regular file: a pseudo path, a device or a directory is an error.
func OpenMapped(procDir string, m Mapping) (*os.File, error) {
	if m.Path == "" || m.Pseudo() {
		return nil, fmt.Errorf("process: mapping %x-%x has no file (%q)", m.Start, m.End, m.Path)
	}
	f, err := OpenMapFile(procDir, m.Start, m.End)
	if err == nil {
		return f, nil
	}
	f, rerr := openRegular(filepath.Join(procDir, "root", m.Path))
	if rerr != nil {
		return nil, fmt.Errorf("process: opening %s: %w (through map_files: %v)", m.Path, rerr, err)
	}
	return f, nil
}

// OpenMapFile opens the file mapped at [start, end) in the process whose
// /proc directory is procDir through procDir/map_files/START-END only (see
// OpenMapped); it must be a regular file.
func OpenMapFile(procDir string, start, end uint64) (*os.File, error) {
	return openRegular(MapFilePath(procDir, start, end))
}

// MapFilePath is the path under procDir/map_files of the mapping at
// [start, end).
func MapFilePath(procDir string, start, end uint64) string {
	return filepath.Join(procDir, "map_files", fmt.Sprintf("%x-%x", start, end))
}

// OpenExe opens the executable of the process whose /proc directory is
// procDir (procDir/exe); it must be a regular file.
func OpenExe(procDir string) (*os.File, error) {
	return openRegular(filepath.Join(procDir, "exe"))
}

func openRegular(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file (%v)", path, fi.Mode().Type())
	}
	return f, nil
}

// FileKey identifies the contents of a file without reading them: its
// device and inode, as the opened file reports them (not the maps file's
// device column, which overlay file systems make differ), with its size
// and modification time, so that a file rewritten in place gets a new key.
// Files with a build id are better keyed by it. It returns "" when fi does
// not come from a stat.
func FileKey(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("f:%x:%x:%d:%d", st.Dev, st.Ino, fi.ModTime().UnixNano(), fi.Size())
}

// Inode is a file's device and inode number: Dev as in Mapping
// (major<<32 | minor), which is how both /proc/PID/maps and the kernel's
// own description of a mapping (bpf_find_vma) name the file.
type Inode struct{ Dev, Ino uint64 }

// FileInode returns the device and inode of an opened file; ok is false
// when fi does not come from a stat.
func FileInode(fi os.FileInfo) (in Inode, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return in, false
	}
	return Inode{Dev: uint64(unix.Major(st.Dev))<<32 | uint64(unix.Minor(st.Dev)), Ino: st.Ino}, true
}
