package sampler

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/unwinder"
)

// Limits of the BPF side (unwinder/bpf/unwind.h).
const (
	maxFileRows     = 1 << 21                          // UNWIND_ROW_BITS: rows one binary search covers
	maxUnwindFrames = len(bpf.ScorchUnwindStack{}.Pcs) // UNWIND_MAX_FRAMES
)

const (
	// DefaultUnwindTableBytes is the default size of the kernel's row array.
	DefaultUnwindTableBytes = 16 << 20
	// tableQueue bounds the requests waiting for the table worker.
	tableQueue = 4096
	// sweepInterval is how often the kernel's file entries are checked
	// for use.
	sweepInterval = 10 * time.Second
	// negativeTTL is how long a file that could not be opened (its process
	// exited) stays without a table before the kernel may ask again.
	negativeTTL = 10 * time.Second
	// pendingTTL is how long a request may stay unanswered in the kernel
	// before its placeholder is removed (a request user space never saw).
	pendingTTL = 10 * time.Second
	// maxFailed bounds the files remembered as having no usable table.
	maxFailed = 4096
)

// tableLinger is how long a file's entry stays in the kernel after the
// walker last used it (a variable for tests). On a host where a program is
// started again and again (shell loops, cron, CI jobs) the next run finds
// its tables in place and unwinds from its first sample; idle tables also
// go as soon as the row array needs their space.
var tableLinger = time.Minute

// TableStats describe the unwind tables the sampler keeps in the kernel.
type TableStats struct {
	Files        int           // file entries in the kernel (unwind_files) answered with a table
	Tables       int           // distinct tables loaded (files with the same build id share one)
	Rows         int           // rows in use
	RowsCapacity int           // size of the row array (Options.UnwindTableBytes / 8)
	Requests     uint64        // file requests received from the kernel
	Builds       uint64        // tables built
	BuildTime    time.Duration // time spent building them
	BuildErrors  uint64        // files without a usable table (no CFI, not ELF, unreadable, malformed)
	NoSpace      uint64        // files left to frame pointers: the row array was full
	Dropped      uint64        // requests dropped: the worker's queue was full
}

// fileKey is a mapped file as the kernel knows it (struct unwind_file_key).
type fileKey = bpf.ScorchUnwindFileKey

// request is the kernel's request for a file's table (struct
// unwind_request), or a request of load (pid, no key).
type request struct {
	key        fileKey
	start, end uint64 // the mapping of pid that maps the file; 0, 0: pid's executable
	pid        uint32
	done       chan struct{} // closed when handled (may be nil)
	preload    bool          // load: read pid's maps and answer for every file
}

// table is one ELF file's rows in unwind_rows, shared by every file entry
// with the same contents (build id).
type table struct {
	key         string
	first, rows uint32
	adj         int64 // ELF virtual address - file offset of the executable segment
	refs        int   // file entries using it
}

// fileEntry is an entry this worker wrote in unwind_files.
type fileEntry struct {
	tab     *table    // nil: no table (FP)
	expires time.Time // non-zero: a negative answer the kernel may ask again after
}

// tableManager answers the kernel's requests for unwind tables. Its state
// belongs to the worker goroutine (run); the request reader goroutine
// (read) only forwards requests. Both are owned by the manager: close
// stops and waits for them.
type tableManager struct {
	log      *slog.Logger
	procRoot string    // "/proc", or the host's /proc mounted elsewhere
	rows     *ebpf.Map // unwind_rows
	files    *ebpf.Map // unwind_files
	requests *ringbuf.Reader
	// barrier is updated before freed rows are reused, so that no program
	// still walks the old table (see Sampler.Drain).
	barrier func() error

	reqs   chan request
	cancel context.CancelFunc
	done   chan struct{}

	// Worker state.
	alloc   *rowAllocator
	tables  map[string]*table
	entries map[fileKey]*fileEntry
	failed  map[string]bool
	pending []*table // freed, rows not yet returned to alloc

	stats struct {
		files, tables, rows                  atomic.Int64
		requests, builds, buildNS, buildErrs atomic.Uint64
		noSpace, dropped                     atomic.Uint64
	}
	capacity int
}

func newTableManager(log *slog.Logger, procRoot string, rows, files, requests *ebpf.Map, barrier func() error) (*tableManager, error) {
	rd, err := ringbuf.NewReader(requests)
	if err != nil {
		return nil, fmt.Errorf("open unwind_requests ring buffer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &tableManager{
		log: log, procRoot: procRoot, rows: rows, files: files, requests: rd, barrier: barrier,
		reqs:     make(chan request, tableQueue),
		cancel:   cancel,
		done:     make(chan struct{}),
		alloc:    newRowAllocator(rows.MaxEntries()),
		tables:   map[string]*table{},
		entries:  map[fileKey]*fileEntry{},
		failed:   map[string]bool{},
		capacity: int(rows.MaxEntries()),
	}
	m.loadVDSO()
	readerDone := make(chan struct{})
	go m.read(ctx, readerDone)
	go func() {
		m.run(ctx)
		<-readerDone
		close(m.done)
	}()
	return m, nil
}

// read forwards the kernel's requests to the worker until ctx ends.
func (m *tableManager) read(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	var rec ringbuf.Record
	for ctx.Err() == nil {
		m.requests.SetDeadline(time.Now().Add(200 * time.Millisecond))
		err := m.requests.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case err != nil:
			if !errors.Is(err, ringbuf.ErrClosed) {
				m.log.Warn("unwind tables: read requests", "err", err)
			}
			return
		}
		if len(rec.RawSample) < int(unsafe.Sizeof(bpf.ScorchUnwindRequest{})) {
			continue
		}
		raw := (*bpf.ScorchUnwindRequest)(unsafe.Pointer(&rec.RawSample[0]))
		m.stats.requests.Add(1)
		if !m.send(request{key: raw.File, start: raw.Start, end: raw.End, pid: raw.Pid}) {
			// Forget the placeholder, so that a later sample asks again.
			m.files.Delete(raw.File)
		}
	}
}

func (m *tableManager) send(r request) bool {
	select {
	case m.reqs <- r:
		return true
	default:
		m.stats.dropped.Add(1)
		if r.done != nil {
			close(r.done)
		}
		return false
	}
}

// load builds the tables of the files pids map now and waits (at most until
// ctx ends) until they are built, so that the kernel's requests for them
// are answered at once.
func (m *tableManager) load(ctx context.Context, pids []uint32) {
	var waits []chan struct{}
	for _, pid := range pids {
		done := make(chan struct{})
		if m.send(request{pid: pid, preload: true, done: done}) {
			waits = append(waits, done)
		}
	}
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return
		}
	}
}

// close stops the worker and the reader and waits for them.
func (m *tableManager) close() {
	m.cancel()
	<-m.done
	m.requests.Close()
}

func (m *tableManager) Stats() TableStats {
	return TableStats{
		Files:        int(m.stats.files.Load()),
		Tables:       int(m.stats.tables.Load()),
		Rows:         int(m.stats.rows.Load()),
		RowsCapacity: m.capacity,
		Requests:     m.stats.requests.Load(),
		Builds:       m.stats.builds.Load(),
		BuildTime:    time.Duration(m.stats.buildNS.Load()),
		BuildErrors:  m.stats.buildErrs.Load(),
		NoSpace:      m.stats.noSpace.Load(),
		Dropped:      m.stats.dropped.Load(),
	}
}

func (m *tableManager) run(ctx context.Context) {
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.reqs:
			if r.preload {
				m.preload(r.pid)
			} else {
				m.answer(r)
			}
			if len(m.reqs) == 0 {
				m.reclaim() // once per burst: it waits for running programs
			}
			m.publish() // who waits for the request reads the stats next
			if r.done != nil {
				close(r.done)
			}
		case <-sweep.C:
			m.sweep(false)
			m.reclaim()
			m.publish()
		}
	}
}

// monotonic is CLOCK_MONOTONIC in nanoseconds: bpf_ktime_get_ns's clock.
func monotonic() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// answer builds (or finds) the table of the file the kernel asked for and
// writes its entry.
func (m *tableManager) answer(r request) {
	if e := m.entries[r.key]; e != nil {
		// Asked again: our entry went (the map was cleared); write it back.
		m.write(r.key, e)
		return
	}
	var (
		f    *os.File
		err  error
		path string
	)
	dir := m.procDir(r.pid)
	if r.start == 0 && r.end == 0 {
		path = "exe"
		f, err = os.Open(dir + "/exe")
	} else {
		f, path, err = openMapped(dir, r.start, r.end)
	}
	if err != nil {
		// The process is gone, or the file cannot be read: frame
		// pointers for now; the kernel may ask again later.
		m.log.Debug("unwind tables: open mapped file", "pid", r.pid, "path", path, "err", err)
		m.setEntry(r.key, &fileEntry{expires: time.Now().Add(negativeTTL)})
		return
	}
	defer f.Close()
	m.setEntry(r.key, &fileEntry{tab: m.tableOf(f, r.key, path)})
}

// preload builds the tables of pid's executable mappings; the kernel asks
// for them at pid's next sample and gets them at once. Where the file's
// inode generation can be read, the entry is written right away.
func (m *tableManager) preload(pid uint32) {
	dir := m.procDir(pid)
	maps, err := readExecMappings(dir)
	if err != nil {
		m.log.Debug("unwind tables: process not loaded", "pid", pid, "err", err)
		return
	}
	for _, mp := range maps {
		if mp.path == "" || mp.inode == "0" {
			continue
		}
		f, path, err := openMapped(dir, mp.start, mp.end)
		if err != nil {
			continue
		}
		key, ok := kernelKey(f, mp)
		if !ok {
			m.tableOf(f, fileKey{}, path) // built; the entry waits for the kernel's request
		} else if m.entries[key] == nil {
			m.setEntry(key, &fileEntry{tab: m.tableOf(f, key, path)})
		}
		f.Close()
	}
}

// fsIocGetversion is FS_IOC_GETVERSION (_IOR('v', 1, long)): the inode's
// generation, on the file systems that keep one (ext4, btrfs, xfs).
const fsIocGetversion = 0x80087601

// kernelKey is the kernel's key for the file mp maps, opened as f: the
// device and inode from the maps line, the generation by FS_IOC_GETVERSION
// (false when the file system does not say).
func kernelKey(f *os.File, mp execMapping) (fileKey, bool) {
	maj, min, ok := strings.Cut(mp.dev, ":")
	major, err1 := strconv.ParseUint(maj, 16, 32)
	minor, err2 := strconv.ParseUint(min, 16, 32)
	ino, err3 := strconv.ParseUint(mp.inode, 10, 64)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return fileKey{}, false
	}
	gen, err := unix.IoctlGetUint32(int(f.Fd()), fsIocGetversion)
	if err != nil {
		return fileKey{}, false
	}
	return fileKey{Ino: ino, Dev: uint32(major<<20 | minor), Gen: gen}, true
}

// tableOf returns the table of the ELF file f (nil when it has none usable),
// building and loading it unless a file with the same contents has one.
// Everything read from f is untrusted (a container's file): a malformed
// file is counted and left to frame pointers, never a crash.
func (m *tableManager) tableOf(f *os.File, key fileKey, path string) (tab *table) {
	defer func() {
		if p := recover(); p != nil {
			m.stats.buildErrs.Add(1)
			m.log.Warn("unwind tables: malformed file", "path", path, "panic", p)
			tab = nil
		}
	}()
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil // not ELF (a script interpreter's mapping, a JIT file)
	}
	defer ef.Close()
	ck := contentKey(ef, f, key)
	if t := m.tables[ck]; t != nil {
		return t
	}
	if m.failed[ck] {
		return nil
	}
	return m.build(ck, ef, path)
}

// loadVDSO loads the table of the running kernel's vDSO under the zero key
// (the walker looks the vDSO up there): every process maps the same image
// of its word size.
func (m *tableManager) loadVDSO() {
	img, err := vdsoImage()
	if err != nil {
		m.log.Debug("unwind tables: no vDSO table", "err", err)
		return
	}
	ef, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		m.log.Debug("unwind tables: no vDSO table", "err", err)
		return
	}
	if t := m.build("vdso", ef, "[vdso]"); t != nil {
		m.setEntry(fileKey{}, &fileEntry{tab: t})
		t.refs++ // never released
	}
}

// vdsoImage reads our own vDSO (the same as every process's of our word
// size, whatever the PID namespace).
func vdsoImage() ([]byte, error) {
	own, err := readExecMappings("/proc/self")
	if err != nil {
		return nil, err
	}
	for _, o := range own {
		if o.special != "[vdso]" {
			continue
		}
		mem, err := os.Open("/proc/self/mem")
		if err != nil {
			return nil, err
		}
		defer mem.Close()
		img := make([]byte, o.end-o.start)
		if _, err := mem.ReadAt(img, int64(o.start)); err != nil {
			return nil, err
		}
		return img, nil
	}
	return nil, errors.New("no [vdso] mapping")
}

// build builds the table of ef and copies it into unwind_rows; nil when
// there is none or no room.
func (m *tableManager) build(ck string, ef *elf.File, path string) *table {
	t := &table{key: ck}
	found := false
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			t.adj = int64(p.Vaddr - p.Off)
			found = true
			break
		}
	}
	start := time.Now()
	tab, err := buildTable(ef)
	m.stats.builds.Add(1)
	m.stats.buildNS.Add(uint64(time.Since(start)))
	if err == nil && !found {
		err = errors.New("no executable segment")
	}
	if err != nil {
		m.stats.buildErrs.Add(1)
		if len(m.failed) >= maxFailed {
			clear(m.failed)
		}
		m.failed[ck] = true
		m.log.Debug("unwind tables: no table", "path", path, "err", err)
		return nil
	}
	b, _ := tab.AppendBinary(nil)
	n := uint32(len(b) / unwinder.RowSize)
	first, ok := m.alloc.alloc(n)
	if !ok {
		// Make room: drop what the walker has not used lately.
		m.sweep(true)
		m.reclaim()
		first, ok = m.alloc.alloc(n)
	}
	if !ok {
		m.stats.noSpace.Add(1)
		m.log.Debug("unwind tables: row array full", "path", path, "rows", n, "used", m.alloc.used)
		return nil
	}
	if err := m.writeRows(first, b); err != nil {
		m.alloc.release(first, n)
		m.stats.buildErrs.Add(1)
		m.log.Warn("unwind tables: load rows", "path", path, "err", err)
		return nil
	}
	t.first, t.rows = first, n
	m.tables[ck] = t
	return t
}

// setEntry records e as the answer for key and writes it to the kernel.
func (m *tableManager) setEntry(key fileKey, e *fileEntry) {
	if e.tab != nil {
		e.tab.refs++
	}
	if old := m.entries[key]; old != nil && old.tab != nil {
		m.unref(old.tab)
	}
	m.entries[key] = e
	m.write(key, e)
}

func (m *tableManager) write(key fileKey, e *fileEntry) {
	v := bpf.ScorchUnwindFile{State: uint32(bpf.ScorchUnwindFileStateUNWIND_FILE_READY), LastUsed: monotonic()}
	if e.tab != nil {
		v.FirstRow, v.Nrows, v.Adj = e.tab.first, e.tab.rows, e.tab.adj
	}
	if err := m.files.Update(key, &v, ebpf.UpdateAny); err != nil {
		m.log.Debug("unwind tables: write file entry", "err", err)
	}
}

func (m *tableManager) unref(t *table) {
	t.refs--
	if t.refs > 0 {
		return
	}
	delete(m.tables, t.key)
	m.pending = append(m.pending, t)
}

// sweep removes the kernel's file entries the walker has not used for
// tableLinger (every unused one past a second when all is set: the row
// array is full), negative answers past their time, and placeholders of
// requests that never reached the worker.
func (m *tableManager) sweep(all bool) {
	now := monotonic()
	linger := uint64(tableLinger)
	if all {
		linger = uint64(time.Second)
	}
	var (
		key  fileKey
		v    bpf.ScorchUnwindFile
		dead []fileKey
	)
	it := m.files.Iterate()
	for it.Next(&key, &v) {
		e := m.entries[key]
		switch {
		case key == fileKey{}:
			// The vDSO: kept.
		case v.State != uint32(bpf.ScorchUnwindFileStateUNWIND_FILE_READY):
			if now-v.LastUsed > uint64(pendingTTL) && now > v.LastUsed {
				dead = append(dead, key)
			}
		case e != nil && !e.expires.IsZero() && time.Now().After(e.expires):
			dead = append(dead, key)
		case now > v.LastUsed && now-v.LastUsed > linger:
			dead = append(dead, key)
		}
	}
	if err := it.Err(); err != nil {
		m.log.Debug("unwind tables: sweep", "err", err)
	}
	for _, k := range dead {
		if err := m.files.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			m.log.Debug("unwind tables: delete file entry", "err", err)
		}
		if e := m.entries[k]; e != nil {
			delete(m.entries, k)
			if e.tab != nil {
				m.unref(e.tab)
			}
		}
	}
}

// reclaim returns the rows of dropped tables to the allocator, once no
// program can still be reading them.
func (m *tableManager) reclaim() {
	if len(m.pending) == 0 {
		return
	}
	if err := m.barrier(); err != nil {
		m.log.Warn("unwind tables: cannot wait for running programs; keeping freed rows", "err", err)
		return
	}
	for _, t := range m.pending {
		if err := m.alloc.release(t.first, t.rows); err != nil {
			m.log.Error("unwind tables", "err", err)
		}
	}
	m.pending = m.pending[:0]
}

func (m *tableManager) publish() {
	n := 0
	for _, e := range m.entries {
		if e.tab != nil {
			n++
		}
	}
	m.stats.files.Store(int64(n))
	m.stats.tables.Store(int64(len(m.tables)))
	m.stats.rows.Store(int64(m.alloc.used))
}

func buildTable(ef *elf.File) (*unwinder.Table, error) {
	tab, err := unwinder.Build(ef)
	if err != nil {
		return nil, err
	}
	st := tab.Stats()
	switch {
	case st.Rows == 0:
		return nil, errors.New("no call frame information")
	case st.Rows > maxFileRows:
		return nil, fmt.Errorf("%d rows, more than the %d one table may have", st.Rows, maxFileRows)
	}
	return tab, nil // Build refuses files beyond the 4 GiB rows address
}

// writeRows copies encoded rows into unwind_rows from index first, in
// batches.
func (m *tableManager) writeRows(first uint32, b []byte) error {
	const batch = 8192
	n := len(b) / unwinder.RowSize
	keys := make([]uint32, 0, batch)
	vals := make([]uint64, 0, batch)
	for i := 0; i < n; i += batch {
		keys, vals = keys[:0], vals[:0]
		for j := i; j < min(n, i+batch); j++ {
			keys = append(keys, first+uint32(j))
			vals = append(vals, binary.LittleEndian.Uint64(b[j*unwinder.RowSize:]))
		}
		if _, err := m.rows.BatchUpdate(keys, vals, nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for k := range keys {
				if err := m.rows.Update(keys[k], vals[k], ebpf.UpdateAny); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// procDir is the /proc directory of pid (a pid of the PID namespace of the
// proc root, which must be the initial one: the BPF program reports those).
func (m *tableManager) procDir(pid uint32) string {
	return m.procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
}

// openMapped opens the file behind the mapping [start, end) of the process
// whose /proc directory is dir: through map_files (the very file mapped,
// even if deleted or in another mount namespace), else through the
// process's root and the path its maps give.
func openMapped(dir string, start, end uint64) (*os.File, string, error) {
	name := fmt.Sprintf("%s/map_files/%x-%x", dir, start, end)
	f, err := os.Open(name)
	if err == nil {
		return f, name, nil
	}
	maps, merr := readExecMappings(dir)
	if merr != nil {
		return nil, name, err
	}
	for _, mp := range maps {
		if mp.start == start && mp.path != "" {
			f, err := os.Open(dir + "/root" + mp.path)
			return f, mp.path, err
		}
	}
	return nil, name, err
}

// contentKey identifies a file's contents: its GNU build id, else the
// kernel's key for it with its size and modification time.
func contentKey(ef *elf.File, f *os.File, key fileKey) string {
	if id := buildID(ef); id != "" {
		return "build-id:" + id
	}
	k := fmt.Sprintf("inode:%x:%d:%d", key.Dev, key.Ino, key.Gen)
	if fi, err := f.Stat(); err == nil {
		k += fmt.Sprintf(":%d:%d", fi.Size(), fi.ModTime().UnixNano())
	}
	return k
}

// buildID returns the hex GNU build id of ef, or "".
func buildID(ef *elf.File) string {
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<16 {
			continue
		}
		data, err := io.ReadAll(io.LimitReader(p.Open(), 1<<16))
		if err != nil {
			continue
		}
		for len(data) >= 12 {
			nameSz := uint64(ef.ByteOrder.Uint32(data[0:]))
			descSz := uint64(ef.ByteOrder.Uint32(data[4:]))
			typ := ef.ByteOrder.Uint32(data[8:])
			nameEnd := 12 + (nameSz+3)&^3
			descEnd := nameEnd + (descSz+3)&^3
			if nameSz > uint64(len(data)) || descSz > uint64(len(data)) || descEnd > uint64(len(data)) {
				break
			}
			if typ == 3 /* NT_GNU_BUILD_ID */ && nameSz == 4 && bytes.Equal(data[12:15], []byte("GNU")) && descSz > 0 {
				return hex.EncodeToString(data[nameEnd : nameEnd+descSz])
			}
			data = data[descEnd:]
		}
	}
	return ""
}

// execMapping is an executable mapping of a process.
type execMapping struct {
	start, end, off uint64
	path            string // the file, or "" (anonymous or special)
	special         string // "[vdso]" and the like
	dev, inode      string
}

// readExecMappings parses the executable mappings of dir/maps, dir being a
// process's /proc directory.
func readExecMappings(dir string) ([]execMapping, error) {
	f, err := os.Open(dir + "/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseExecMappings(f)
}

func parseExecMappings(r io.Reader) ([]execMapping, error) {
	var out []execMapping
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return nil, fmt.Errorf("maps line %d: %d fields, want at least 5", line, len(fields))
		}
		if len(fields[1]) < 3 || fields[1][2] != 'x' {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		off, err3 := strconv.ParseUint(fields[2], 16, 64)
		if !ok || err1 != nil || err2 != nil || err3 != nil || end <= start {
			return nil, fmt.Errorf("maps line %d: malformed range or offset %q %q", line, fields[0], fields[2])
		}
		mp := execMapping{start: start, end: end, off: off, dev: fields[3], inode: fields[4]}
		if len(fields) >= 6 && strings.HasPrefix(fields[5], "/") {
			// The path is the rest of the line (it may hold spaces), minus
			// a " (deleted)" suffix.
			text := sc.Text()
			mp.path = strings.TrimSuffix(text[strings.Index(text, fields[5]):], " (deleted)")
		} else if len(fields) == 6 {
			mp.special = fields[5]
		}
		out = append(out, mp)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
