package process

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// ErrTooLarge is returned by ReadProcFile for a file longer than its limit.
var ErrTooLarge = errors.New("file exceeds size limit")

// procBufs are the buffers /proc files are read into (a pointer, so that
// Put does not allocate): 16 KiB, a page or four of text, which holds the
// maps of most processes; a longer file grows its read's own buffer.
var procBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// ReadProcFile reads the whole file at path, a file of /proc (maps,
// cgroup, stat), and returns a copy of its contents; a file longer than
// limit bytes (limit > 0) is an error wrapping ErrTooLarge. Errors opening
// or reading are *os.PathError, as os.ReadFile gives them (errors.Is(err,
// os.ErrNotExist) once the process is gone).
//
// /proc's files have no size to stat and are generated as they are read:
// os.ReadFile stats the file, registers it with the poller and reads it
// 512 bytes at a time, growing its buffer, which for a maps file costs
// about 2.5 times one read into a buffer that holds it (32 against 13 µs
// for 37 mappings here). A host agent reads several such files of every
// process a host starts, hundreds a second on a busy host.
func ReadProcFile(path string, limit int) ([]byte, error) {
	var out []byte
	err := withProcFile(path, limit, func(b []byte) error {
		out = append([]byte(nil), b...)
		return nil
	})
	return out, err
}

// withProcFile reads the file at path as ReadProcFile does and hands its
// contents to fn, in a buffer fn must not keep.
func withProcFile(path string, limit int, fn func([]byte) error) error {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	bp := procBufs.Get().(*[]byte)
	buf := *bp
	n := 0
	for {
		if n == len(buf) {
			if limit > 0 && n > limit {
				break
			}
			buf = append(buf, make([]byte, len(buf))...)
		}
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			procBufs.Put(bp)
			return &os.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	defer func() {
		if cap(buf) <= 64<<10 { // a larger one stays with the read that needed it
			*bp = buf[:cap(buf)]
			procBufs.Put(bp)
		}
	}()
	if limit > 0 && n > limit {
		return fmt.Errorf("process: %s: %w (%d bytes)", path, ErrTooLarge, limit)
	}
	return fn(buf[:n])
}
