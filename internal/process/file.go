package process

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A File is one mapped ELF file, opened once and parsed once (its ELF
// headers, program headers and build id), and shared by everything that
// reads it: the unwinder's table worker builds the file's unwind table
// from it and the symbolizer its symbol tables. Files come from a Files
// cache, with a reference the user gives back with Files.Release.
//
// Everything in a File came from an untrusted file; what reads its
// sections further (debug/dwarf, the unwinder) must run under Guard.
type File struct {
	// Path is the path the file was first opened for (as the mapping
	// names it), for logs.
	Path string
	// ELF is the parsed file. Its sections read through ReaderAt.
	ELF *elf.File
	// Loads are the PT_LOAD segments (at least one).
	Loads []elf.ProgHeader
	// BuildID is the GNU build id in hex, else Go's build id, else "".
	BuildID string
	// IsGo: the file has a .gopclntab section.
	IsGo bool
	// ContentKey names the file's contents: "build-id:HEX" or
	// "go-build-id:ID" where it has one, else its FileKey. Two files with
	// the same key have the same tables.
	ContentKey string
	// Inode is the file's device and inode as its stat gives them (zero
	// for the vDSO).
	Inode Inode

	r      io.ReaderAt // an *os.File (so sections are mapped), or the vDSO's bytes
	closer io.Closer
	key    string // FileKey: the cache's key ("" for the vDSO)

	// Guarded by Files.mu.
	refs      int
	idleSince time.Time
}

// ReaderAt returns the reader of the file's bytes: an *os.File for files
// (internal/mapped maps sections of those), the image for the vDSO.
func (f *File) ReaderAt() io.ReaderAt { return f.r }

// Fd returns the file's descriptor, or ^uintptr(0) for the vDSO.
func (f *File) Fd() uintptr {
	if osf, ok := f.r.(*os.File); ok {
		return osf.Fd()
	}
	return ^uintptr(0)
}

// Files is the one cache of opened, parsed mapped files: a file is opened
// and parsed once however many processes map it and whichever of the
// unwinder and the symbolizer asks first. It is keyed by the file's device,
// inode, size and modification time (FileKey), as the opened file's stat
// gives them, and also found by device and inode (ByInode), which is all
// the kernel says of a mapping. A file no user holds stays open for the
// linger (so that the other user, or the next process running the same
// program, finds it parsed), at most maxIdle of them, then is closed.
//
// Files that are not ELF, or that are malformed, are remembered for a
// while too (by FileKey, a bounded set), so that a host running the same
// script interpreter a thousand times parses it once; each such error is
// counted. A Files is safe for concurrent use.
type Files struct {
	linger  time.Duration
	maxIdle int
	maps    *Snapshots

	mu      sync.Mutex
	byKey   map[string]*File
	byInode map[Inode]*File
	idle    []idleFile       // files whose refs dropped to 0, oldest first
	failed  map[string]error // FileKey -> why it is not usable
	vdso    *File
	vdsoErr error
	vdsoSet bool

	stats struct {
		opens, parses, hits, parseErrors, panics atomic.Uint64
	}
}

type idleFile struct {
	pf    *File
	since time.Time
}

// FilesStats are the counters of a Files.
type FilesStats struct {
	Open        int    // files open now (held or lingering)
	Opens       uint64 // files opened for a user
	Parses      uint64 // files whose ELF headers were parsed
	Hits        uint64 // opens, and lookups by inode (ByInode), that found the file parsed already
	ParseErrors uint64 // files that are not ELF or are malformed
	Panics      uint64 // of those, files whose parsing panicked (recovered)
}

const (
	// DefaultFileLinger is how long a file no user holds stays open.
	DefaultFileLinger = 30 * time.Second
	defaultMaxIdle    = 512
	maxFailed         = 4096
)

// NewFiles returns an empty cache whose unheld files stay open for linger
// (DefaultFileLinger when 0).
func NewFiles(linger time.Duration) *Files {
	if linger <= 0 {
		linger = DefaultFileLinger
	}
	return &Files{linger: linger, maxIdle: defaultMaxIdle, byKey: map[string]*File{},
		byInode: map[Inode]*File{}, failed: map[string]error{}, maps: NewSnapshots()}
}

// Maps returns the reads of processes' maps that go with the files: the
// users of a Files find the files of a process through its maps, and
// share those reads as they share the files.
func (c *Files) Maps() *Snapshots { return c.maps }

// Open returns the file behind mapping m of the process whose /proc
// directory is procDir (see OpenMapped), parsed, with a reference.
func (c *Files) Open(procDir string, m Mapping) (*File, error) {
	f, err := OpenMapped(procDir, m)
	if err != nil {
		return nil, err
	}
	return c.Adopt(f, m.Path)
}

// Adopt returns the parsed file f, which the caller opened (for example
// at once, before a short-lived process exits) as path: the cached one when
// the same file is open already (f is closed then), else f parsed under
// Guard. f is owned by the cache from then on, closed on error too. An
// error wraps a *ParseError when parsing panicked.
func (c *Files) Adopt(f *os.File, path string) (*File, error) {
	c.stats.opens.Add(1)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("process: stat %s: %w", path, err)
	}
	key := FileKey(fi)
	in, _ := FileInode(fi)
	if key == "" {
		f.Close()
		return nil, fmt.Errorf("process: %s: no device and inode in its stat", path)
	}
	if pf, err, ok := c.lookup(key); ok {
		f.Close()
		return pf, err
	}
	c.stats.parses.Add(1)
	pf, err := parseFile(f, f, path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		f.Close()
		c.countLocked(err)
		if len(c.failed) >= maxFailed {
			clear(c.failed)
		}
		c.failed[key] = err
		return nil, err
	}
	if old := c.byKey[key]; old != nil {
		// Opened by another user meanwhile: keep the first.
		f.Close()
		c.stats.hits.Add(1)
		old.refs++
		return old, nil
	}
	pf.key, pf.Inode, pf.closer = key, in, f
	if pf.ContentKey == "" {
		pf.ContentKey = key
	}
	pf.refs = 1
	c.byKey[key] = pf
	if in != (Inode{}) {
		c.byInode[in] = pf
	}
	return pf, nil
}

// lookup returns the file open under key with a new reference, or the
// error it failed with; ok is false when the key is unknown.
func (c *Files) lookup(key string) (*File, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expireLocked(time.Now())
	if pf := c.byKey[key]; pf != nil {
		c.stats.hits.Add(1)
		pf.refs++
		return pf, nil, true
	}
	if err, ok := c.failed[key]; ok {
		return nil, err, true
	}
	return nil, nil, false
}

func (c *Files) countLocked(err error) {
	c.stats.parseErrors.Add(1)
	var pe *ParseError
	if errors.As(err, &pe) {
		c.stats.panics.Add(1)
	}
}

// ByInode returns the file open with that device and inode, with a new
// reference; nil when none is.
func (c *Files) ByInode(in Inode) *File {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pf := c.byInode[in]; pf != nil {
		c.stats.hits.Add(1)
		pf.refs++
		return pf
	}
	return nil
}

// Release gives back a reference from Open, Adopt or ByInode.
func (c *Files) Release(pf *File) {
	if pf == nil || pf.closer == nil {
		return // the vDSO, never closed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	pf.refs--
	now := time.Now()
	if pf.refs == 0 {
		pf.idleSince = now
		c.idle = append(c.idle, idleFile{pf, now})
	}
	c.expireLocked(now)
}

// expireLocked closes the files no user has held for the linger, and the
// oldest idle ones beyond maxIdle.
func (c *Files) expireLocked(now time.Time) {
	n := 0
	over := len(c.idle) - c.maxIdle
	for i, e := range c.idle {
		if e.pf.refs > 0 || !e.pf.idleSince.Equal(e.since) || c.byKey[e.pf.key] != e.pf {
			n++ // in use again, idle again since (a later entry stands), or closed
			continue
		}
		if i >= over && now.Sub(e.since) < c.linger {
			break
		}
		n++
		c.removeLocked(e.pf)
	}
	if n > 0 {
		c.idle = append(c.idle[:0], c.idle[n:]...)
	}
}

func (c *Files) removeLocked(pf *File) {
	if c.byKey[pf.key] == pf {
		delete(c.byKey, pf.key)
	}
	if c.byInode[pf.Inode] == pf {
		delete(c.byInode, pf.Inode)
	}
	pf.closer.Close()
}

// VDSO returns the running kernel's vDSO image (every process maps the
// same one of its word size), parsed once. It is never released.
func (c *Files) VDSO() (*File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.vdsoSet {
		c.vdsoSet = true
		img, err := VDSO()
		if err == nil {
			c.vdso, err = parseFile(bytes.NewReader(img), nil, "[vdso]")
		}
		if err != nil {
			c.vdsoErr = err
		} else if c.vdso.ContentKey == "" {
			c.vdso.ContentKey = "vdso"
		}
	}
	return c.vdso, c.vdsoErr
}

// Stats returns the cache's counters.
func (c *Files) Stats() FilesStats {
	c.mu.Lock()
	open := len(c.byKey)
	c.mu.Unlock()
	return FilesStats{Open: open, Opens: c.stats.opens.Load(), Parses: c.stats.parses.Load(), Hits: c.stats.hits.Load(),
		ParseErrors: c.stats.parseErrors.Load(), Panics: c.stats.panics.Load()}
}

// Close closes every file, held or not; the cache must not be used after.
func (c *Files) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pf := range c.byKey {
		pf.closer.Close()
	}
	clear(c.byKey)
	clear(c.byInode)
	c.idle = nil
}

// ErrNotELF is wrapped by the errors of Files for a file that is not an
// ELF file, or not one with loadable segments (a script an interpreter
// mapped, a data file), as opposed to a file that could not be opened. A
// file whose parsing panicked gives a *ParseError instead.
var ErrNotELF = errors.New("not a loadable ELF file")

// parseFile parses r's ELF headers and build id under Guard.
func parseFile(r io.ReaderAt, closer io.Closer, path string) (*File, error) {
	var pf *File
	err := Guard(path, func() error {
		ef, err := elf.NewFile(r)
		if err != nil {
			return fmt.Errorf("%s: %w: %w", path, ErrNotELF, err)
		}
		pf = &File{Path: path, ELF: ef, r: r, closer: closer}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD {
				pf.Loads = append(pf.Loads, p.ProgHeader)
			}
		}
		if len(pf.Loads) == 0 {
			return fmt.Errorf("%s: %w: no PT_LOAD segments", path, ErrNotELF)
		}
		pf.IsGo = ef.Section(".gopclntab") != nil
		if id := BuildID(ef); id != "" {
			pf.BuildID, pf.ContentKey = id, "build-id:"+id
		} else if id := GoBuildID(ef); id != "" {
			pf.BuildID, pf.ContentKey = id, "go-build-id:"+id
		}
		return nil
	})
	return pf, err
}
