// Package mapped gives read-only access to parts of files without copying
// them into the Go heap: uncompressed ELF sections are mapped with mmap
// (PROT_READ, MAP_SHARED), so that their pages belong to the page cache,
// are shared with every process that maps the same file, and can be
// reclaimed by the kernel under memory pressure instead of counting
// against the Go heap and its GC headroom. Bytes that are no file (a
// compressed section, decompressed) can be written to a file and mapped
// the same way (Spill, which the symbolizer uses for debug sections);
// Section, which the unwinder uses, reads compressed sections into
// memory, as it does readers that are not files and tiny ranges.
//
// # Truncated files
//
// A mapped file that is truncated afterwards makes reads past its new end
// fault with SIGBUS. Go turns that into a fatal error unless the goroutine
// asked for a panic with debug.SetPanicOnFault(true); code that reads
// mapped bytes must run under internal/process's Guard, which does so and
// recovers.
//
// # Lifetime
//
// A Region is unmapped by Close, or, when its owner attaches it with
// Attach, once the owner is garbage: readers of the bytes must keep the
// owner alive (runtime.KeepAlive) for as long as they use them.
package mapped

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// minMap is the size under which a range is read rather than mapped (a
// mapping costs a VMA and at least a page).
const minMap = 64 << 10

// Region is a read-only range of a file, mapped or read.
type Region struct {
	mu   sync.Mutex
	mem  []byte // the whole mapping (page aligned), nil when read
	data []byte
	path string // a file of Spill's, removed by Close
}

// Bytes returns the contents. They must not be modified, nor used after
// Close.
func (r *Region) Bytes() []byte {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.data
}

// Mapped reports whether the bytes are mapped from the file (false once
// closed).
func (r *Region) Mapped() bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mem != nil
}

// Close unmaps the region. It is safe to call more than once.
func (r *Region) Close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mem, path := r.mem, r.path
	r.mem, r.data, r.path = nil, nil, ""
	if mem == nil {
		return nil
	}
	err := unix.Munmap(mem)
	if path != "" {
		os.Remove(path)
	}
	return err
}

// Attach unmaps r once owner is unreachable. owner must not be reachable
// from r.
func Attach[T any](owner *T, r *Region) {
	if r.Mapped() {
		runtime.AddCleanup(owner, func(r *Region) { r.Close() }, r)
	}
}

// ReadAt returns n bytes of f at off, mapped when f is an *os.File and n
// is large enough, else read. The range must lie inside the file.
func ReadAt(f io.ReaderAt, off, n uint64, max uint64) (*Region, error) {
	if n > max {
		return nil, fmt.Errorf("%d bytes at %#x: more than the %d byte limit", n, off, max)
	}
	if off+n < off {
		return nil, fmt.Errorf("%d bytes at %#x: range overflows", n, off)
	}
	if osf, ok := f.(*os.File); ok && n >= minMap {
		fi, err := osf.Stat()
		if err != nil {
			return nil, err
		}
		if size := uint64(fi.Size()); off+n > size {
			return nil, fmt.Errorf("%d bytes at %#x: past the end of the %d byte file", n, off, size)
		}
		page := uint64(os.Getpagesize())
		start := off &^ (page - 1)
		mem, err := unix.Mmap(int(osf.Fd()), int64(start), int(off+n-start), unix.PROT_READ, unix.MAP_SHARED)
		if err == nil {
			return &Region{mem: mem, data: mem[off-start : off-start+n : off-start+n]}, nil
		}
		// Files that cannot be mapped (some special file systems) are read.
	}
	// A reader that knows its size (bytes.Reader, io.SectionReader) is
	// checked before n bytes are allocated: a crafted header may claim a
	// section of the limit's size in a file of a few KiB.
	if sf, ok := f.(interface{ Size() int64 }); ok {
		if size := sf.Size(); size < 0 || off > uint64(size) || n > uint64(size)-off {
			return nil, fmt.Errorf("%d bytes at %#x: past the end of the %d byte file", n, off, size)
		}
	}
	data := make([]byte, n)
	if _, err := f.ReadAt(data, int64(off)); err != nil && !(err == io.EOF && uint64(len(data)) == n) {
		return nil, fmt.Errorf("%d bytes at %#x: %w", n, off, err)
	}
	return &Region{data: data}, nil
}

// Section returns the contents of an ELF section of the file f: mapped
// when stored uncompressed, else decompressed (or read) into memory. It
// refuses sections of more than max bytes.
func Section(f io.ReaderAt, s *elf.Section, max uint64) (*Region, error) {
	if s.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("section %s has no data", s.Name)
	}
	if s.Size > max || s.FileSize > max {
		return nil, fmt.Errorf("section %s is %d bytes, more than the %d byte limit", s.Name, s.Size, max)
	}
	if s.Flags&elf.SHF_COMPRESSED == 0 && s.FileSize == s.Size && f != nil {
		r, err := ReadAt(f, s.Offset, s.Size, max)
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", s.Name, err)
		}
		return r, nil
	}
	if s.Size <= readWhole {
		data := make([]byte, s.Size)
		if n, err := io.ReadFull(s.Open(), data); err != nil {
			return nil, fmt.Errorf("section %s: read %d of %d bytes: %w", s.Name, n, s.Size, err)
		}
		return &Region{data: data}, nil
	}
	// The size is the header's word (for a compressed section, the size
	// it claims to decompress to): memory follows the bytes that come, so
	// that a crafted file of a few KiB cannot make us allocate the limit.
	data, err := io.ReadAll(io.LimitReader(s.Open(), int64(s.Size)+1))
	if err == nil && uint64(len(data)) != s.Size {
		err = errors.New("the contents do not match the size in the header")
	}
	if err != nil {
		return nil, fmt.Errorf("section %s: read %d of %d bytes: %w", s.Name, len(data), s.Size, err)
	}
	return &Region{data: data}, nil
}

// readWhole is the size up to which Section allocates a section's bytes
// before reading them.
const readWhole = 1 << 20

// Spill returns the bytes open yields, at most max of them, written to a
// file in dir and mapped (MAP_SHARED, read-only): for bytes that exist
// nowhere as a file (a compressed section, decompressed), so that they
// live in the page cache, which the kernel may write back and reclaim,
// rather than in the Go heap, where the collector's headroom would add
// half again. The file ("spill-*") is removed when the region is closed;
// the owner of dir empties it at start of what a process that crashed
// left. It is mapped through a read-only descriptor: a file open for
// writing, or one unlinked while open, would keep its file system from
// being remounted read-only. When dir is "" or the file cannot be
// written (a full disk, a read-only directory), the bytes are read into
// memory from a second open: the caller gets them either way.
func Spill(dir string, open func() io.Reader, max uint64) (*Region, error) {
	if dir != "" {
		if r, err := spill(dir, open(), max); err == nil || errors.Is(err, errTooBig) {
			return r, err
		}
	}
	data, err := io.ReadAll(io.LimitReader(open(), int64(min(max, 1<<62))+1))
	if err != nil {
		return nil, err
	}
	if uint64(len(data)) > max {
		return nil, fmt.Errorf("%w (%d bytes)", errTooBig, max)
	}
	return &Region{data: data}, nil
}

var errTooBig = errors.New("more bytes than the limit")

func spill(dir string, src io.Reader, max uint64) (_ *Region, err error) {
	f, err := os.CreateTemp(dir, "spill-*")
	if err != nil {
		return nil, err
	}
	path := f.Name()
	mapped := false
	defer func() {
		f.Close()
		if !mapped {
			os.Remove(path)
		}
	}()
	n, err := io.Copy(f, io.LimitReader(src, int64(min(max, 1<<62))+1))
	if err != nil {
		return nil, err
	}
	if uint64(n) > max {
		return nil, fmt.Errorf("%w (%d bytes)", errTooBig, max)
	}
	if n < minMap {
		data := make([]byte, n)
		if _, err := f.ReadAt(data, 0); err != nil && n > 0 {
			return nil, err
		}
		return &Region{data: data}, nil
	}
	ro, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer ro.Close() // the mapping keeps the file
	mem, err := unix.Mmap(int(ro.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	mapped = true
	return &Region{mem: mem, data: mem[:n:n], path: path}, nil
}

// DropPages takes a mapped region's pages out of the process's memory
// (madvise MADV_DONTNEED): they stay in the page cache and come back on
// the next read, at the cost of a minor fault. For bytes read once in
// full (an index built over them) and then rarely: they no longer count
// in the process's resident set. A region read into memory is left as
// it is.
func (r *Region) DropPages() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem != nil {
		unix.Madvise(r.mem, unix.MADV_DONTNEED)
	}
}
