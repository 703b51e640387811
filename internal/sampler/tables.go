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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/unwinder"
)

// Limits of the BPF side (unwinder/bpf/unwind.h).
const (
	maxProcMappings = len(bpf.ScorchUnwindProc{}.Mappings) // UNWIND_MAX_MAPPINGS
	maxFileRows     = 1 << 21                              // UNWIND_ROW_BITS: rows one binary search covers
	maxUnwindFrames = len(bpf.ScorchUnwindStack{}.Pcs)     // UNWIND_MAX_FRAMES
)

const (
	// DefaultUnwindTableBytes is the default size of the kernel's row array.
	DefaultUnwindTableBytes = 16 << 20
	// tableQueue bounds the requests waiting for the table worker.
	tableQueue = 4096
	// rescanInterval is how soon a process's mappings may be read again.
	rescanInterval = 2 * time.Second
	// sweepInterval is how often processes are checked for being alive
	// when no exit events arrive.
	sweepInterval = 30 * time.Second
	// maxFailed bounds the files remembered as having no usable table.
	maxFailed = 4096
)

// tableLinger is how long a file's table stays loaded after the last
// process mapping it went away (a variable for tests). On a host where a
// program is started again and again (shell loops, cron, CI jobs) each run
// would otherwise rebuild the tables of the program and of libc; idle
// tables also go as soon as the row array needs their space.
var tableLinger = time.Minute

// TableStats describe the unwind tables the sampler keeps in the kernel.
type TableStats struct {
	Files         int           // ELF files with a table loaded
	Processes     int           // processes whose stacks are walked with tables
	Rows          int           // rows in use
	RowsCapacity  int           // size of the row array (Options.UnwindTableBytes / 8)
	Builds        uint64        // tables built
	BuildTime     time.Duration // time spent building them
	BuildErrors   uint64        // files without a usable table (no CFI, not ELF, unreadable)
	NoSpace       uint64        // files left to frame pointers: the row array was full
	NoProcSlot    uint64        // processes left to frame pointers: unwind_procs full
	DroppedEvents uint64        // requests dropped: the worker's queue was full
}

type tableReq struct {
	kind EventType
	pid  uint32
	done chan struct{} // closed when handled (may be nil)
}

// evRescan asks the worker to read a process's mappings again (new code
// was mapped since the last read).
const evRescan EventType = 100

// evExpireAll frees every table no process maps (tests).
const evExpireAll EventType = 101

// tableFile is one ELF file's table in unwind_rows, shared by every process
// mapping the file.
type tableFile struct {
	key         string
	first, rows uint32           // slice of unwind_rows; rows == 0: no table
	idleSince   time.Time        // when refs dropped to 0 (the table lingers)
	loads       []elf.ProgHeader // executable PT_LOAD segments
	refs        int
	size        uint64 // of the vDSO image
}

// execMapping is an executable mapping of a process.
type execMapping struct {
	start, end, off uint64
	path            string // the file, or "" (anonymous or special)
	special         string // "[vdso]" and the like
	dev, inode      string
}

type procTables struct {
	files    []*tableFile
	scanned  time.Time
	mappings [][2]uint64 // every executable mapping at the last scan
}

// tableManager builds unwind tables and loads them into the kernel. Its
// state belongs to the worker goroutine (run); other goroutines only queue
// requests and read the atomic stats and the mapping snapshot.
type tableManager struct {
	log      *slog.Logger
	procRoot string    // "/proc", or the host's /proc mounted elsewhere
	rows     *ebpf.Map // unwind_rows
	procs    *ebpf.Map // unwind_procs
	// barrier is updated before freed rows are reused, so that no program
	// still walks the old table (see Sampler.Drain).
	barrier func() error

	reqs   chan tableReq
	cancel context.CancelFunc
	done   chan struct{}

	// Worker state.
	alloc   *rowAllocator
	files   map[string]*tableFile
	failed  map[string]bool
	pids    map[uint32]*procTables
	pending []*tableFile // freed, rows not yet returned to alloc

	mu    sync.Mutex
	known map[uint32][][2]uint64 // executable mappings per process (for Drain)

	stats struct {
		files, procs, rows                            atomic.Int64
		builds, buildNS, buildErrors, noSpace, noProc atomic.Uint64
		dropped                                       atomic.Uint64
	}
	capacity int
	lastHint map[uint32]time.Time // Drain's goroutine only
}

func newTableManager(log *slog.Logger, procRoot string, rows, procs *ebpf.Map, barrier func() error) *tableManager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &tableManager{
		log: log, procRoot: procRoot, rows: rows, procs: procs, barrier: barrier,
		reqs:     make(chan tableReq, tableQueue),
		cancel:   cancel,
		done:     make(chan struct{}),
		alloc:    newRowAllocator(rows.MaxEntries()),
		files:    map[string]*tableFile{},
		failed:   map[string]bool{},
		pids:     map[uint32]*procTables{},
		known:    map[uint32][][2]uint64{},
		capacity: int(rows.MaxEntries()),
		lastHint: map[uint32]time.Time{},
	}
	go m.run(ctx)
	return m
}

// notify queues a lifecycle event without blocking.
func (m *tableManager) notify(ev Event) {
	m.send(tableReq{kind: ev.Type, pid: ev.Pid})
}

func (m *tableManager) send(r tableReq) bool {
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

// load scans pids now and waits (at most until ctx ends) until their tables
// are in the kernel.
func (m *tableManager) load(ctx context.Context, pids []uint32) {
	var waits []chan struct{}
	for _, pid := range pids {
		done := make(chan struct{})
		if m.send(tableReq{kind: EventNewPid, pid: pid, done: done}) {
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

// hint is called by Drain with the addresses of a table-unwound stack of
// pid: an address outside every executable mapping known for pid means the
// process mapped new code (dlopen, a late library) since its last scan.
func (m *tableManager) hint(pid uint32, pcs []uint64, now time.Time) {
	if t, ok := m.lastHint[pid]; ok && now.Sub(t) < rescanInterval {
		return
	}
	m.mu.Lock()
	known, ok := m.known[pid]
	m.mu.Unlock()
	if !ok {
		return
	}
	for _, pc := range pcs {
		_, found := slices.BinarySearchFunc(known, pc, func(r [2]uint64, pc uint64) int {
			switch {
			case r[1] <= pc:
				return -1
			case r[0] > pc:
				return 1
			}
			return 0
		})
		if !found {
			m.lastHint[pid] = now
			m.send(tableReq{kind: evRescan, pid: pid})
			return
		}
	}
}

// close stops the worker and waits for it. Requests sent later are
// dropped once the queue is full.
func (m *tableManager) close() {
	m.cancel()
	<-m.done
}

func (m *tableManager) Stats() TableStats {
	return TableStats{
		Files:         int(m.stats.files.Load()),
		Processes:     int(m.stats.procs.Load()),
		Rows:          int(m.stats.rows.Load()),
		RowsCapacity:  m.capacity,
		Builds:        m.stats.builds.Load(),
		BuildTime:     time.Duration(m.stats.buildNS.Load()),
		BuildErrors:   m.stats.buildErrors.Load(),
		NoSpace:       m.stats.noSpace.Load(),
		NoProcSlot:    m.stats.noProc.Load(),
		DroppedEvents: m.stats.dropped.Load(),
	}
}

func (m *tableManager) run(ctx context.Context) {
	defer close(m.done)
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-m.reqs:
			m.handle(r)
			if len(m.reqs) == 0 {
				m.reclaim() // once per burst: it waits for running programs
			}
			// Who waits for the request reads the stats next.
			m.publish()
			if r.done != nil {
				close(r.done)
			}
		case <-sweep.C:
			m.sweep()
			m.expireIdle(time.Now(), false)
			m.publish()
		}
	}
}

func (m *tableManager) handle(r tableReq) {
	switch r.kind {
	case EventNewPid, evRescan:
		// A new-process event right after a scan (Options.Pids loads
		// tables before the first sample) has nothing new to show; Drain
		// rate-limits rescans itself.
		if p := m.pids[r.pid]; p != nil && r.kind == EventNewPid && time.Since(p.scanned) < rescanInterval {
			return
		}
		if err := m.scan(r.pid); err != nil {
			m.log.Debug("unwind tables: process not loaded", "pid", r.pid, "err", err)
			m.drop(r.pid)
		}
	case EventExec, EventExit:
		// After exec the old mappings are gone; the next sample announces
		// the process again (EventNewPid).
		m.drop(r.pid)
	case evExpireAll:
		m.expireIdle(time.Now(), true)
	}
}

// sweep drops processes that died without an exit event.
func (m *tableManager) sweep() {
	for pid := range m.pids {
		if _, err := os.Stat(m.procDir(pid)); errors.Is(err, os.ErrNotExist) {
			m.drop(pid)
		}
	}
}

// drop forgets a process and the tables only it used.
func (m *tableManager) drop(pid uint32) {
	p := m.pids[pid]
	if p == nil {
		return
	}
	if err := m.procs.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		m.log.Debug("unwind tables: delete process", "pid", pid, "err", err)
	}
	delete(m.pids, pid)
	m.mu.Lock()
	delete(m.known, pid)
	m.mu.Unlock()
	m.unref(p.files)
}

func (m *tableManager) unref(files []*tableFile) {
	now := time.Now()
	for _, f := range files {
		f.refs--
		if f.refs > 0 {
			continue
		}
		if tableLinger > 0 {
			f.idleSince = now // kept for a process that maps it again
			continue
		}
		m.free(f)
	}
}

// free forgets f; its rows return to the allocator at the next reclaim.
func (m *tableManager) free(f *tableFile) {
	delete(m.files, f.key)
	if f.rows > 0 {
		m.pending = append(m.pending, f)
	}
}

// expireIdle frees the tables no process has mapped for tableLinger, or
// every unmapped one when all is set (the row array is full).
func (m *tableManager) expireIdle(now time.Time, all bool) {
	for _, f := range m.files {
		if f.refs == 0 && (all || now.Sub(f.idleSince) >= tableLinger) {
			m.free(f)
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
	for _, f := range m.pending {
		if err := m.alloc.release(f.first, f.rows); err != nil {
			m.log.Error("unwind tables", "err", err)
		}
	}
	m.pending = m.pending[:0]
}

func (m *tableManager) publish() {
	n := 0
	for _, f := range m.files {
		if f.rows > 0 {
			n++
		}
	}
	m.stats.files.Store(int64(n))
	m.stats.procs.Store(int64(len(m.pids)))
	m.stats.rows.Store(int64(m.alloc.used))
}

// scan reads the executable mappings of pid, loads the tables of their
// files and writes the process's unwind_procs entry.
func (m *tableManager) scan(pid uint32) error {
	maps, err := readExecMappings(m.procDir(pid))
	if err != nil {
		return err
	}
	var (
		files   []*tableFile
		entries []bpf.ScorchUnwindMapping
		known   [][2]uint64
	)
	for _, mp := range maps {
		known = append(known, [2]uint64{mp.start, mp.end})
		var f *tableFile
		switch {
		case mp.special == "[vdso]":
			f = m.vdsoFile(mp)
		case mp.path == "" || mp.inode == "0":
			continue // anonymous (JIT) or special: frame pointers
		default:
			f = m.file(pid, mp)
		}
		if f == nil {
			continue
		}
		f.refs++ // held by this scan until the old one is released below
		files = append(files, f)
		if f.rows == 0 || len(entries) == maxProcMappings {
			continue
		}
		bias, ok := loadBias(f.loads, mp)
		if !ok {
			continue
		}
		entries = append(entries, bpf.ScorchUnwindMapping{Start: mp.start, End: mp.end, Bias: bias, FirstRow: f.first, Nrows: f.rows})
	}
	old := m.pids[pid]
	p := &procTables{files: files, scanned: time.Now(), mappings: known}
	m.pids[pid] = p
	m.mu.Lock()
	m.known[pid] = known
	m.mu.Unlock()
	if old != nil {
		m.unref(old.files)
	}
	m.reclaim()

	if len(entries) == 0 {
		return m.procs.Delete(pid)
	}
	slices.SortFunc(entries, func(a, b bpf.ScorchUnwindMapping) int {
		switch {
		case a.Start < b.Start:
			return -1
		case a.Start > b.Start:
			return 1
		}
		return 0
	})
	var v bpf.ScorchUnwindProc
	v.Nmappings = uint32(len(entries))
	copy(v.Mappings[:], entries)
	if err := m.procs.Update(pid, &v, ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) {
			m.stats.noProc.Add(1)
		}
		return fmt.Errorf("write unwind_procs: %w", err)
	}
	return nil
}

// loadBias is runtime address - ELF virtual address for mapping mp of a
// file with the given executable segments.
func loadBias(loads []elf.ProgHeader, mp execMapping) (uint64, bool) {
	for _, p := range loads {
		if mp.off >= p.Off && mp.off < p.Off+max(p.Filesz, 1) {
			return mp.start - mp.off - (p.Vaddr - p.Off), true
		}
	}
	if len(loads) > 0 {
		p := loads[0]
		return mp.start - mp.off - (p.Vaddr - p.Off), true
	}
	return 0, false
}

// file returns the table of the file mapped by mp, building and loading it
// when it is not loaded yet; nil when the file cannot be read.
func (m *tableManager) file(pid uint32, mp execMapping) *tableFile {
	r, err := openMapped(m.procDir(pid), mp)
	if err != nil {
		m.log.Debug("unwind tables: open mapped file", "pid", pid, "path", mp.path, "err", err)
		return nil
	}
	defer r.Close()
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil // not ELF (a script interpreter's mapping, a JIT file)
	}
	defer ef.Close()
	key := fileKey(ef, r, mp)
	if f := m.files[key]; f != nil {
		return f
	}
	f := &tableFile{key: key}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
			f.loads = append(f.loads, p.ProgHeader)
		}
	}
	m.files[key] = f
	if m.failed[key] {
		return f
	}
	m.loadTable(f, ef, mp.path)
	return f
}

// vdsoFile returns the table of the vDSO. Every process of a kernel maps
// the same vDSO image (of its word size), so it is built once, from this
// process's copy, and kept for the sampler's lifetime.
func (m *tableManager) vdsoFile(mp execMapping) *tableFile {
	if f := m.files["vdso"]; f != nil {
		if f.size != mp.end-mp.start {
			return nil // a different vDSO (a 32-bit process)
		}
		return f
	}
	f := &tableFile{key: "vdso", refs: 1} // never released
	m.files["vdso"] = f
	own, err := readExecMappings("/proc/self") // ours, whatever the PID namespace
	if err != nil {
		return f
	}
	for _, o := range own {
		if o.special != "[vdso]" {
			continue
		}
		f.size = o.end - o.start
		mem, err := os.Open("/proc/self/mem")
		if err != nil {
			return f
		}
		img := make([]byte, f.size)
		_, err = mem.ReadAt(img, int64(o.start))
		mem.Close()
		if err != nil {
			return f
		}
		ef, err := elf.NewFile(bytes.NewReader(img))
		if err != nil {
			return f
		}
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
				f.loads = append(f.loads, p.ProgHeader)
			}
		}
		m.loadTable(f, ef, "[vdso]")
	}
	if f.size != mp.end-mp.start {
		return nil
	}
	return f
}

// loadTable builds the table of ef and copies it into unwind_rows; on failure f
// keeps no rows (its mappings use frame pointers).
func (m *tableManager) loadTable(f *tableFile, ef *elf.File, path string) {
	key := f.key
	start := time.Now()
	tab, err := buildTable(ef)
	m.stats.builds.Add(1)
	m.stats.buildNS.Add(uint64(time.Since(start)))
	if err != nil {
		m.stats.buildErrors.Add(1)
		if len(m.failed) >= maxFailed {
			clear(m.failed)
		}
		m.failed[key] = true
		m.log.Debug("unwind tables: no table", "path", path, "err", err)
		return
	}
	b, _ := tab.AppendBinary(nil)
	n := uint32(len(b) / unwinder.RowSize)
	first, ok := m.alloc.alloc(n)
	if !ok {
		m.expireIdle(time.Now(), true)
		m.reclaim()
		first, ok = m.alloc.alloc(n)
	}
	if !ok {
		m.stats.noSpace.Add(1)
		m.log.Debug("unwind tables: row array full", "path", path, "rows", n, "used", m.alloc.used)
		return
	}
	if err := m.writeRows(first, b); err != nil {
		m.alloc.release(first, n)
		m.stats.buildErrors.Add(1)
		m.log.Warn("unwind tables: load rows", "path", path, "err", err)
		return
	}
	f.first, f.rows = first, n
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

// openMapped opens the file behind a mapping of the process whose /proc
// directory is dir: through map_files (the very file mapped, even if
// deleted or in another mount namespace), else through the process's root.
func openMapped(dir string, mp execMapping) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("%s/map_files/%x-%x", dir, mp.start, mp.end))
	if err == nil {
		return f, nil
	}
	return os.Open(dir + "/root" + mp.path)
}

// fileKey identifies a file's contents: its GNU build id, else device,
// inode, size and modification time.
func fileKey(ef *elf.File, f *os.File, mp execMapping) string {
	if id := buildID(ef); id != "" {
		return "build-id:" + id
	}
	key := "inode:" + mp.dev + ":" + mp.inode
	if fi, err := f.Stat(); err == nil {
		key += fmt.Sprintf(":%d:%d", fi.Size(), fi.ModTime().UnixNano())
	}
	return key
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
