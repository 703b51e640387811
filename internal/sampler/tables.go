package sampler

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
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
	// tableBuilders is how many tables are built at once, and
	// bigBuilders how many of them may be big (bigBuildBytes or more).
	// Building a big Go binary's table (dockerd: about 30 MB of text)
	// allocates over 100 MB and takes a CPU for half a second: one at a
	// time bounds the agent's peak, and the other builder keeps a program
	// that has just started from waiting behind it.
	tableBuilders = 2
	bigBuilders   = 1
	// bigBuildBytes of unwind information make a build big enough that
	// its garbage is handed back to the OS at once (debug.FreeOSMemory)
	// rather than kept in the agent's RSS until the scavenger gets to it.
	bigBuildBytes = 8 << 20
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
	CacheHits    uint64        // tables read from the on-disk cache instead of built
	// Deferred samples (Stats.Deferred) received, finished with tables
	// once they were in, and finished short of the outermost frame (no
	// table in time, the stack copy too short, the process gone).
	Deferred, DeferredFinished, DeferredIncomplete uint64
	// DeferredBytes is the size of the deferred samples received: a
	// main thread's carries its stack up to the top only.
	DeferredBytes uint64
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
	warm       bool          // warm: build file's table; write key's entry when keyed
	parked     *parked       // a deferred sample to finish
	flush      bool          // finish the deferred samples of processes gone
	flushAll   bool          // flush: ... and of the others
	keyed      bool          // warm: key is the kernel's key for file
	file       *os.File      // the file, opened by the reader (nil: not yet)
	path       string        // what file was opened from
	openErr    error         // why it could not be
	sweep      bool          // sweep now (tests)
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
	procRoot string         // "/proc", or the host's /proc mounted elsewhere
	pfiles   *process.Files // the opened, parsed files, shared with the symbolizer
	rows     *ebpf.Map      // unwind_rows
	files    *ebpf.Map      // unwind_files
	procs    *ebpf.Map      // unwind_procs (see kernelMappings)
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
	inodes  map[inodeKey]*fileEntry // entries by device and inode (byInode); nil when entries changed since
	failed  map[string]bool
	pending []*table // freed, rows not yet returned to alloc

	stats struct {
		files, tables, rows                  atomic.Int64
		requests, builds, buildNS, buildErrs atomic.Uint64
		noSpace, dropped, cacheHits          atomic.Uint64
		// Deferred samples: received, finished with tables, and finished
		// short of the outermost frame.
		deferred, deferredFinished, deferredIncomplete atomic.Uint64
		deferredBytes                                  atomic.Uint64
	}
	capacity int
	cache    *tableCache // nil: none
	// rowsMmapable: unwind_rows can be mapped (BPF_F_MMAPABLE), so rows
	// are copied in rather than updated one by one.
	rowsMmapable bool

	// Builders: at most cap(slots) tables are built at once, each on a
	// goroutine of its own (owned by the manager: close waits for them),
	// which hands the result back on built.
	ctx       context.Context
	slots     chan struct{}
	warmSlots chan struct{} // the builder of warm's tables, beside those of the kernel's requests
	bigSlots  chan struct{} // held, with one of slots, by a big build
	built     chan built
	builders  sync.WaitGroup
	inflight  map[string][]fileKey // content keys being built -> the files waiting

	// Deferred samples (deferred.go): read by a reader goroutine of the
	// manager's, held by the worker until their tables are in, then queued
	// for Drain.
	deferredRing *ringbuf.Reader
	parked       []*parked                  // worker state
	flushWaits   []flushWait                // drains waiting for deferred samples (worker state)
	decoded      map[*table]*unwinder.Table // loaded tables read back for them (worker state)
	finished     finishedSamples
	held         heldPids // per process, the deferred samples not yet taken by a drain
}

func newTableManager(log *slog.Logger, procRoot string, pfiles *process.Files, objs *bpf.ScorchObjects, barrier func() error, cache *tableCache) (*tableManager, error) {
	rows, files, requests, deferred := objs.UnwindRows, objs.UnwindFiles, objs.UnwindRequests, objs.Deferred
	rd, err := ringbuf.NewReader(requests)
	if err != nil {
		return nil, fmt.Errorf("open unwind_requests ring buffer: %w", err)
	}
	drd, err := ringbuf.NewReader(deferred)
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("open deferred ring buffer: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &tableManager{
		log: log, procRoot: procRoot, pfiles: pfiles, rows: rows, procs: objs.UnwindProcs, files: files, requests: rd, barrier: barrier,
		reqs:      make(chan request, tableQueue),
		cancel:    cancel,
		done:      make(chan struct{}),
		alloc:     newRowAllocator(rows.MaxEntries()),
		tables:    map[string]*table{},
		entries:   map[fileKey]*fileEntry{},
		failed:    map[string]bool{},
		capacity:  int(rows.MaxEntries()),
		cache:     cache,
		ctx:       ctx,
		slots:     make(chan struct{}, tableBuilders),
		bigSlots:  make(chan struct{}, bigBuilders),
		warmSlots: make(chan struct{}, 1),
		built:     make(chan built, tableBuilders),
		inflight:  map[string][]fileKey{},

		deferredRing: drd,
		decoded:      map[*table]*unwinder.Table{},
	}
	if info, err := rows.Info(); err == nil && info.Flags&unix.BPF_F_MMAPABLE != 0 {
		m.rowsMmapable = true
	}
	m.loadVDSO()
	readerDone := make(chan struct{})
	go m.read(ctx, readerDone)
	deferredDone := make(chan struct{})
	go m.readDeferred(ctx, drd, deferredDone)
	go func() {
		m.run(ctx)
		<-readerDone
		<-deferredDone
		m.builders.Wait()
		close(m.done)
	}()
	return m, nil
}

// read forwards the kernel's requests to the worker until ctx ends.
func (m *tableManager) read(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	err := readRing(ctx, m.requests, "unwind table requests", func(rec []byte) {
		if len(rec) < int(unsafe.Sizeof(bpf.ScorchUnwindRequest{})) {
			return
		}
		raw := (*bpf.ScorchUnwindRequest)(unsafe.Pointer(&rec[0]))
		m.stats.requests.Add(1)
		r := request{key: raw.File, start: raw.Start, end: raw.End, pid: raw.Pid}
		m.openRequested(&r)
		if !m.send(r) {
			// Forget the placeholder, so that a later sample asks again.
			m.files.Delete(raw.File)
			if r.file != nil {
				r.file.Close()
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		m.log.Warn("unwind tables", "err", err)
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
	m.deferredRing.Close()
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
		CacheHits:    m.stats.cacheHits.Load(),

		Deferred:           m.stats.deferred.Load(),
		DeferredFinished:   m.stats.deferredFinished.Load(),
		DeferredIncomplete: m.stats.deferredIncomplete.Load(),
		DeferredBytes:      m.stats.deferredBytes.Load(),
	}
}

func (m *tableManager) run(ctx context.Context) {
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	// Fires when the first parked sample's time is up.
	parkTimer := time.NewTimer(time.Hour)
	defer parkTimer.Stop()
	for {
		if t := m.nextDeadline(); !t.IsZero() {
			parkTimer.Reset(time.Until(t))
		}
		select {
		case <-ctx.Done():
			return
		case <-parkTimer.C:
			m.resolveParked()
			m.checkFlushes()
		case r := <-m.reqs:
			switch {
			case r.parked != nil:
				m.park(r.parked)
			case r.flush:
				m.flush(r.done, r.flushAll)
				r.done = nil // closed by checkFlushes
			case r.preload:
				m.preload(r.pid)
			case r.warm:
				m.warmOne(r)
			case r.sweep:
				m.sweep(false)
			default:
				m.answer(r)
			}
			if len(m.reqs) == 0 {
				m.reclaim() // once per burst: it waits for running programs
			}
			m.resolveParked()
			m.publish() // who waits for the request reads the stats next
			if r.done != nil {
				close(r.done)
			}
		case b := <-m.built:
			m.builtOne(b)
			m.resolveParked()
			m.checkFlushes()
			m.publish()
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
		if r.file != nil {
			r.file.Close()
		}
		m.write(r.key, e)
		return
	}
	f, path, err := r.file, r.path, r.openErr
	dir := m.procDir(r.pid)
	if f == nil && r.start != 0 {
		// map_files did not open: through the process's root.
		f, path, err = m.openMapped(dir, r.start, r.end)
	}
	if err != nil {
		m.log.Debug("unwind tables: open mapped file", "pid", r.pid, "path", path, "err", err)
		if errors.Is(err, errMappingGone) || !process.Alive(dir) {
			// The process exited first (a short-lived one; a zombie
			// has no files left to open), or exec'd again: nothing is
			// wrong with the file, and the next process mapping it asks
			// again. (A negative answer here once left the dynamic
			// loader without a table for ten seconds, for every
			// program started in them.)
			m.files.Delete(r.key)
			return
		}
		// The file cannot be read: frame pointers for a while, then the
		// kernel may ask again.
		m.setEntry(r.key, &fileEntry{expires: time.Now().Add(negativeTTL)})
		return
	}
	m.answerFile(r.key, true, f, path, m.slots)
}

// answerFile answers for key with the table of f, at once when a file with
// the same contents has one, else when a builder goroutine has built it:
// a large table (a big Go binary, libc) being built does not hold up the
// answer for a small program started beside it. Without keyed, the table
// is only built: the kernel's request for the file finds it loaded. A
// builder takes one of slots first (m.slots for the kernel's requests,
// m.warmSlots for warm's, so that those never wait behind warm's).
func (m *tableManager) answerFile(key fileKey, keyed bool, f *os.File, path string, slots chan struct{}) {
	pf, err := m.adopt(f, path)
	if err != nil {
		if keyed {
			m.setEntry(key, &fileEntry{})
		}
		return
	}
	ck := pf.ContentKey
	if waiters, ok := m.inflight[ck]; ok {
		if keyed {
			m.inflight[ck] = append(waiters, key)
		}
		m.pfiles.Release(pf)
		return
	}
	if t, ok := m.tableNow(pf, false); ok {
		m.pfiles.Release(pf)
		if keyed {
			m.setEntry(key, &fileEntry{tab: t})
		}
		return
	}
	m.inflight[ck] = nil
	if keyed {
		m.inflight[ck] = []fileKey{key}
	}
	m.builders.Add(1)
	go func() {
		defer m.builders.Done()
		defer m.pfiles.Release(pf)
		big := unwindInfoSize(pf.ELF) >= bigBuildBytes
		if big {
			select {
			case m.bigSlots <- struct{}{}:
			case <-m.ctx.Done():
				return
			}
		}
		select {
		case slots <- struct{}{}:
		case <-m.ctx.Done():
			if big {
				<-m.bigSlots
			}
			return
		}
		b := m.encode(pf)
		if big {
			debug.FreeOSMemory()
		}
		<-slots
		if big {
			<-m.bigSlots
		}
		select {
		case m.built <- b:
		case <-m.ctx.Done():
		}
	}()
}

// tableNow returns pf's table when it can be had without a builder, and
// true: loaded already, known to have none (nil), read from the on-disk
// cache, or built here when it is small (a millisecond or so, never behind
// a big table in the builder's queue) or when always is set.
func (m *tableManager) tableNow(pf *process.File, always bool) (*table, bool) {
	ck := pf.ContentKey
	if t := m.tables[ck]; t != nil {
		return t, true
	}
	if m.failed[ck] {
		return nil, true
	}
	if rows, adj, ok := m.cache.get(ck); ok {
		m.stats.cacheHits.Add(1)
		return m.finishBuild(built{ck: ck, path: pf.Path, rows: rows, adj: adj}), true
	}
	if always || unwindInfoSize(pf.ELF) < inlineBuildBytes {
		return m.finishBuild(m.encode(pf)), true
	}
	return nil, false
}

// inlineBuildBytes is the size of unwind information under which a table
// is built by the worker itself rather than by a builder.
const inlineBuildBytes = 128 << 10

// unwindInfoSize is the size of what building ef's table reads.
func unwindInfoSize(ef *elf.File) uint64 {
	var n uint64
	for _, name := range []string{".eh_frame", ".debug_frame", ".gopclntab"} {
		if sec := ef.Section(name); sec != nil {
			n += sec.Size
		}
	}
	return n
}

// builtOne loads a table a builder finished and answers every file that
// waited for it.
func (m *tableManager) builtOne(b built) {
	waiters := m.inflight[b.ck]
	delete(m.inflight, b.ck)
	t := m.finishBuild(b)
	for _, k := range waiters {
		if m.entries[k] == nil {
			m.setEntry(k, &fileEntry{tab: t})
		}
	}
}

// adopt hands f, opened as path, to the shared file cache, which parses it
// under the recover boundary unless it is open already (see
// process.Files.Adopt), and returns it with a reference.
func (m *tableManager) adopt(f *os.File, path string) (*process.File, error) {
	pf, err := m.pfiles.Adopt(f, path)
	if err != nil {
		m.countParseError(path, err)
		return nil, err // not ELF (a script interpreter's mapping, a JIT file), or malformed
	}
	return pf, nil
}

// openRequested opens the file a request names, at once, before the
// requesting process (perhaps short-lived) exits: its executable, or its
// mapping through map_files. The worker tries the process's root after.
func (m *tableManager) openRequested(r *request) {
	dir := m.procDir(r.pid)
	if r.start == 0 && r.end == 0 {
		r.path = dir + "/exe"
		r.file, r.openErr = process.OpenExe(dir)
	} else {
		r.path = process.MapFilePath(dir, r.start, r.end)
		r.file, r.openErr = process.OpenMapFile(dir, r.start, r.end)
		if r.openErr == nil {
			// The file's name, for the symbolizer that finds it open
			// (its frames' mapping) and for its debug link: the link's
			// target is the path the process mapped.
			if target, err := os.Readlink(r.path); err == nil && strings.HasPrefix(target, "/") {
				r.path = strings.TrimSuffix(target, " (deleted)")
			}
		}
	}
	if r.openErr != nil && r.start != 0 {
		r.openErr = nil // the worker tries the root
	}
}

// preload builds the tables of pid's executable mappings; the kernel asks
// for them at pid's next sample and gets them at once. Where the file's
// inode generation can be read, the entry is written right away.
func (m *tableManager) preload(pid uint32) {
	dir := m.procDir(pid)
	maps, err := m.pfiles.Maps().Read(dir, time.Now(), 0)
	if err != nil && len(maps) == 0 {
		m.log.Debug("unwind tables: process not loaded", "pid", pid, "err", err)
		return
	}
	for _, mp := range maps {
		if !mp.Exec() || mp.Anonymous() || mp.Pseudo() {
			continue
		}
		pf, err := m.pfiles.Open(dir, mp)
		if err != nil {
			m.countParseError(mp.Path, err)
			continue
		}
		key, ok := kernelKey(pf.Fd(), mp)
		if !ok {
			m.tableNow(pf, true) // built; the entry waits for the kernel's request
		} else if m.entries[key] == nil {
			t, _ := m.tableNow(pf, true)
			m.setEntry(key, &fileEntry{tab: t})
		}
		m.pfiles.Release(pf)
	}
}

const (
	// warmFiles is how many shared libraries a system-wide sampler loads
	// the tables of when it starts (see warm).
	warmFiles = 32
	// warmMinProcs is how many processes must map a library for warm to
	// load it.
	warmMinProcs = 2
)

// warm loads, behind the kernel's requests, the tables of the shared
// libraries the host's running processes map most (libc, the dynamic
// loader, libstdc++, libgcc_s...): a process started after the sampler
// then finds them in place, and only its own program is new to the
// profiler. Without this the first process to need libc after the sampler
// started waits for libc's table, and its samples in the meantime stop in
// libc ([truncated]). It reads /proc on the calling goroutine and hands
// each file to the worker as a request; it returns when they are queued.
// A build costs the same CPU as the kernel's request for the file would
// later; the on-disk cache makes it a read for a restarted agent.
func (m *tableManager) warm(ctx context.Context) {
	ents, err := os.ReadDir(m.procRoot)
	if err != nil {
		m.log.Debug("unwind tables: no warm-up", "err", err)
		return
	}
	type lib struct {
		dir   string
		mp    process.Mapping
		procs int
	}
	libs := map[[2]uint64]*lib{}
	for _, e := range ents {
		if ctx.Err() != nil {
			return
		}
		if _, err := strconv.ParseUint(e.Name(), 10, 32); err != nil {
			continue
		}
		dir := filepath.Join(m.procRoot, e.Name())
		maps, _ := m.pfiles.Maps().Read(dir, time.Now(), 0) // a process that exited has none
		seen := map[[2]uint64]bool{}
		for _, mp := range maps {
			if !mp.Exec() || mp.Anonymous() || mp.Pseudo() || mp.Deleted || !isSharedLibrary(mp.Path) {
				continue
			}
			id := [2]uint64{mp.Dev, mp.Inode}
			if seen[id] {
				continue
			}
			seen[id] = true
			if l := libs[id]; l != nil {
				l.procs++
			} else {
				libs[id] = &lib{dir: dir, mp: mp, procs: 1}
			}
		}
	}
	order := make([]*lib, 0, len(libs))
	for _, l := range libs {
		if l.procs >= warmMinProcs {
			order = append(order, l)
		}
	}
	slices.SortFunc(order, func(a, b *lib) int { return b.procs - a.procs })
	for _, l := range order[:min(len(order), warmFiles)] {
		if ctx.Err() != nil {
			return
		}
		f, err := process.OpenMapped(l.dir, l.mp)
		if err != nil {
			continue // its process exited meanwhile
		}
		key, keyed := kernelKey(f.Fd(), l.mp)
		if !m.send(request{warm: true, key: key, keyed: keyed, file: f, path: l.mp.Path}) {
			f.Close()
			return
		}
	}
}

// startWarm runs warm on a goroutine of the manager's (close waits for it).
func (m *tableManager) startWarm() {
	m.builders.Add(1)
	go func() {
		defer m.builders.Done()
		m.warm(m.ctx)
	}()
}

// isSharedLibrary reports whether path names a shared library (libc.so.6,
// ld-linux-x86-64.so.2, libfoo.so) rather than a program.
func isSharedLibrary(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, ".so") || strings.Contains(base, ".so.")
}

// warmOne builds the table of a library warm found and, when the kernel's
// key for it is known, writes its entry.
func (m *tableManager) warmOne(r request) {
	if r.keyed && m.entries[r.key] != nil {
		r.file.Close()
		return
	}
	m.answerFile(r.key, r.keyed, r.file, r.path, m.warmSlots)
}

// fsIocGetversion is FS_IOC_GETVERSION (_IOR('v', 1, long)): the inode's
// generation, on the file systems that keep one (ext4, btrfs, xfs).
const fsIocGetversion = 0x80087601

// kernelKey is the kernel's key for the file mp maps, open as fd: the
// device and inode from the maps line, the generation by FS_IOC_GETVERSION
// (false when the file system does not say).
func kernelKey(fd uintptr, mp process.Mapping) (fileKey, bool) {
	gen, err := unix.IoctlGetUint32(int(fd), fsIocGetversion)
	if err != nil {
		return fileKey{}, false
	}
	return fileKey{Ino: mp.Inode, Dev: kernelDev(mp.Dev), Gen: gen}, true
}

// kernelDev is the kernel's encoding of a device number (MAJOR << 20 |
// MINOR, as unwind_file_key has it) of one from /proc/PID/maps
// (process.Mapping.Dev: major << 32 | minor).
func kernelDev(dev uint64) uint32 {
	return uint32(dev>>32<<20 | dev&0xffffffff)
}

// userDev is the inverse of kernelDev: a kernel device number as
// /proc/PID/maps gives it.
func userDev(kdev uint32) uint64 {
	return uint64(kdev>>20)<<32 | uint64(kdev&(1<<20-1))
}

// countParseError counts a file that made its parser panic (a malformed,
// perhaps hostile, file from a container).
func (m *tableManager) countParseError(path string, err error) {
	var perr *process.ParseError
	if errors.As(err, &perr) {
		m.stats.buildErrs.Add(1)
		m.log.Warn("unwind tables: malformed file", "path", path, "err", err)
	}
}

// loadVDSO loads the table of the running kernel's vDSO under the zero key
// (the walker looks the vDSO up there): every process maps the same image
// of its word size.
func (m *tableManager) loadVDSO() {
	pf, err := m.pfiles.VDSO()
	if err != nil {
		m.log.Debug("unwind tables: no vDSO table", "err", err)
		return
	}
	if t := m.finishBuild(m.encode(pf)); t != nil {
		m.setEntry(fileKey{}, &fileEntry{tab: t})
		t.refs++ // never released
	}
}

// built is a table encoded by encode, perhaps on a builder goroutine.
type built struct {
	ck, path string
	rows     []byte
	adj      int64
	err      error
}

// encode builds the rows of pf (see unwinder.Build) and keeps them in the
// on-disk cache. It touches no worker state, so builder goroutines run it.
func (m *tableManager) encode(pf *process.File) built {
	b := built{ck: pf.ContentKey, path: pf.Path}
	adj, found := process.TextAdj(pf.Loads)
	b.adj = adj
	start := time.Now()
	var tab *unwinder.Table
	b.err = process.Guard(pf.Path, func() (err error) {
		tab, err = buildTable(pf.ELF, pf.ReaderAt())
		return err
	})
	m.stats.builds.Add(1)
	m.stats.buildNS.Add(uint64(time.Since(start)))
	if b.err == nil && !found {
		b.err = errors.New("no executable segment, or several at different offsets (no one conversion of its addresses)")
	}
	if b.err != nil {
		return b
	}
	b.rows, _ = tab.AppendBinary(nil)
	m.cache.put(b.ck, b.rows, b.adj)
	return b
}

// finishBuild loads an encoded table (worker goroutine); nil when there is
// none or no room.
func (m *tableManager) finishBuild(b built) *table {
	if b.err != nil {
		m.stats.buildErrs.Add(1)
		if len(m.failed) >= maxFailed {
			clear(m.failed)
		}
		m.failed[b.ck] = true
		m.log.Debug("unwind tables: no table", "path", b.path, "err", b.err)
		return nil
	}
	if t := m.tables[b.ck]; t != nil {
		return t // loaded meanwhile (a preload)
	}
	return m.place(&table{key: b.ck, adj: b.adj}, b.rows, b.path)
}

// place copies the encoded rows b of t into unwind_rows; nil when there is
// no room.
func (m *tableManager) place(t *table, b []byte, path string) *table {
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
	m.tables[t.key] = t
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
	m.inodes = nil
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
	delete(m.decoded, t)
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
			m.inodes = nil
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

func buildTable(ef *elf.File, r io.ReaderAt) (*unwinder.Table, error) {
	tab, err := unwinder.Build(ef, r)
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

// writeRows copies encoded rows into unwind_rows from index first: one
// copy into the map's memory where it is mapped (the rows of libc in tens
// of microseconds rather than milliseconds), else batched updates.
func (m *tableManager) writeRows(first uint32, b []byte) error {
	if ok, err := m.withRows(first, len(b), unix.PROT_READ|unix.PROT_WRITE, func(rows []byte) { copy(rows, b) }); ok {
		return err
	}
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

// withRows calls fn with the size bytes of unwind_rows from row first,
// mapped with prot for the call only (a mapping kept would count the row
// array's pages in the agent's RSS). It reports false when the array
// cannot be mapped (not BPF_F_MMAPABLE, or mmap failed): the caller goes
// through map lookups or updates instead, from then on.
func (m *tableManager) withRows(first uint32, size, prot int, fn func(rows []byte)) (bool, error) {
	if !m.rowsMmapable {
		return false, nil
	}
	off := int64(first) * unwinder.RowSize
	start := off &^ int64(os.Getpagesize()-1)
	mem, err := unix.Mmap(m.rows.FD(), start, int(off-start)+size, prot, unix.MAP_SHARED)
	if err != nil {
		m.rowsMmapable = false
		m.log.Debug("unwind tables: row array not mapped; copying rows by map lookups and updates", "err", err)
		return false, nil
	}
	fn(mem[off-start:])
	return true, unix.Munmap(mem)
}

// procDir is the /proc directory of pid (a pid of the PID namespace of the
// proc root, which must be the initial one: the BPF program reports those).
func (m *tableManager) procDir(pid uint32) string {
	return m.procRoot + "/" + strconv.FormatUint(uint64(pid), 10)
}

// openMapped opens the file behind the mapping [start, end) of the process
// whose /proc directory is dir (see process.OpenMapped), finding its path
// in the process's maps: a read of the last second (the symbolizer's at
// the process's first sample) if it has that mapping, else a new one.
func (m *tableManager) openMapped(dir string, start, end uint64) (*os.File, string, error) {
	for _, since := range []time.Time{time.Now().Add(-time.Second), time.Now()} {
		maps, err := m.pfiles.Maps().Read(dir, since, start)
		if err != nil && len(maps) == 0 {
			return nil, "", err
		}
		for _, mp := range maps {
			if mp.Start == start && mp.End == end {
				f, err := process.OpenMapped(dir, mp)
				return f, mp.Path, err
			}
		}
	}
	return nil, "", fmt.Errorf("%w: no mapping %x-%x in %s/maps", errMappingGone, start, end, dir)
}

// errMappingGone says the process no longer maps what it asked about: it
// exec'd again or unmapped it since (a shell exec'ing its command, a
// dlclose).
var errMappingGone = errors.New("mapping gone")
