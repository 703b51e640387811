package sampler

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/unwinder"
)

// Deferred samples. When the program's walk meets code whose file's table
// is on the way (the first milliseconds of a program new to the
// profiler), or code in a mapping the sample could not learn (its one
// mmap-lock lookup was spent on another library of a process that has
// just started, or the lock was busy), it walks on by frame pointer as
// before, but instead of counting the sample it sends it to user space
// (struct deferred_sample): the registers of that frame, a copy of the
// stack above them, and the kernel's walk. The manager's deferral reader
// reads the process's mappings at once (the process may be short-lived)
// and hands the sample to the table worker, which holds it until the
// table it needs is in (at most deferWait), walks on from that frame with
// unwinder.UnwindFrom on the rows the kernel has, and queues the sample for
// the next Drain. Where the copy of the stack ends before the walk does
// (a Go system stack whose caller is on the goroutine's stack), the walk
// goes on with the kernel's frames after the last frame both have; where
// there is still no table, the sample is the kernel's walk. So a process's
// first samples have whole, right stacks, as later ones do, and none is
// worse than the kernel's walk.

const (
	// deferWait is how long a deferred sample waits for the tables of the
	// code its walk goes through; then it is finished with what there is.
	// The kernel defers samples for a table asked for up to a second ago
	// (UNWIND_DEFER_NS).
	deferWait = 2 * time.Second
	// maxParked bounds the deferred samples waiting (each holds up to
	// 8 KiB of stack): more finish at once with what there is.
	maxParked = 512
	// mapsFresh is how long the mappings read for one deferred sample
	// serve the next ones of the same process.
	mapsFresh = 100 * time.Millisecond
	// deferredRingBytes is the size of the deferred ring buffer: about 200
	// samples in flight of a goroutine, a thread other than the main one or
	// a deep stack (10 KiB, their stack copy whole), up to 600 of a shallow
	// main thread (3 KiB: its stack up to the top). With 512 KiB, a third
	// of the samples deferred on a host running two parallel builds beside
	// the field test's load were lost (kept as the kernel walked them).
	deferredRingBytes = 2 << 20
)

// deferredStackOffset is where a deferred sample's stack copy starts: the
// record is that long plus the bytes of stack it copied.
const deferredStackOffset = unsafe.Offsetof(bpf.ScorchDeferredSample{}.Stack)

// parked is a deferred sample waiting for its tables (worker state).
type parked struct {
	pid, tid uint32
	comm     string
	regs     unwinder.Regs // of the frame to walk on from, pcs[at]
	exact    bool          // regs.PC is the interrupted PC, not a return address
	at       int           // the index of that frame in pcs
	pcs      []uint64      // the user stack as the kernel walked it
	// The kernel's walk ended at the outermost frame; its leaf's caller
	// is marked unknown.
	kernelComplete, kernelCallerUnknown bool
	kern                                []uint64
	stack                               []byte // the stack from regs.SP
	maps                                []process.Mapping
	reread                              bool // maps was read again for a PC it lacked
	deadline                            time.Time
}

// heldPids counts, per process, the deferred samples user space holds:
// received from the kernel and not yet taken by a drain. Their process may
// have exited, and a sample finished after a drain comes out in the next
// one: the profiler keeps what names a process's samples (its mappings,
// the kernel's list of them) until none of its samples is held
// (Sampler.HoldsDeferred). Once, a 50 ms process's samples were all named
// [unknown] after its state had been dropped a drain too early.
type heldPids struct {
	mu sync.Mutex
	n  map[uint32]int
}

func (h *heldPids) add(pid uint32, d int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[uint32]int{}
	}
	if h.n[pid] += d; h.n[pid] <= 0 {
		delete(h.n, pid)
	}
}

func (h *heldPids) holds(pid uint32) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[pid] > 0
}

// finishedSamples is the queue of finished deferred samples Drain takes.
type finishedSamples struct {
	mu      sync.Mutex
	samples []Sample
}

func (f *finishedSamples) add(s Sample) {
	f.mu.Lock()
	f.samples = append(f.samples, s)
	f.mu.Unlock()
}

func (f *finishedSamples) take() []Sample {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.samples
	f.samples = nil
	return s
}

// readDeferred forwards deferred samples to the worker until ctx ends.
func (m *tableManager) readDeferred(ctx context.Context, rd *ringbuf.Reader, done chan<- struct{}) {
	defer close(done)
	// The mappings of the processes of the last records, by pid and comm
	// (a process that execs changes its comm as well as its mappings) and
	// read at most mapsFresh ago.
	type procKey struct {
		pid  uint32
		comm string
	}
	type procMaps struct {
		maps []process.Mapping
		read time.Time
	}
	maps := map[procKey]procMaps{}
	err := readRing(ctx, rd, "deferred samples", func(rec []byte) {
		// A record ends after the stack it copied (stack_len bytes).
		var raw bpf.ScorchDeferredSample
		if len(rec) < int(deferredStackOffset) {
			return
		}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw)), unsafe.Sizeof(raw)), rec)
		raw.StackLen = min(raw.StackLen, uint32(len(rec)-int(deferredStackOffset)))
		m.stats.deferred.Add(1)
		m.stats.deferredBytes.Add(uint64(len(rec)))
		n := min(int(raw.N), len(raw.Pcs))
		if raw.At == 0 || int(raw.At) > n {
			return // malformed: no frame to walk on from
		}
		p := &parked{
			pid: raw.Pid, tid: raw.Tid, comm: commString(raw.Comm),
			regs:                unwinder.Regs{PC: raw.Pcs[raw.At-1], SP: raw.Sp, FP: raw.Fp, LR: raw.Lr},
			exact:               raw.Flags&1 != 0, // UNWIND_F_EXACT_PC
			at:                  int(raw.At) - 1,
			pcs:                 append([]uint64(nil), raw.Pcs[:n]...),
			kernelComplete:      raw.Stop == uint32(bpf.ScorchUnwindStopUNWIND_STOP_END),
			kernelCallerUnknown: raw.LeafCaller != 0,
			kern:                append([]uint64(nil), raw.Kern[:min(int(raw.KernN), len(raw.Kern))]...),
			stack:               append([]byte(nil), raw.Stack[:min(int(raw.StackLen), len(raw.Stack))]...),
			deadline:            time.Now().Add(deferWait),
		}
		// The process's code mappings, now, while it lives: those the
		// kernel's walker learned (it met the PC's mapping unless the mmap
		// lock was busy), else /proc/PID/maps; again when the cached ones
		// lack the PC (a library mapped since).
		k := procKey{p.pid, p.comm}
		pm, ok := maps[k]
		if !ok || findMapping(pm.maps, p.regs.PC) == nil || time.Since(pm.read) > mapsFresh {
			if len(maps) >= 64 {
				clear(maps)
			}
			pm = procMaps{fileMappings(kernelMappings(m.procs, p.pid)), time.Now()}
			if findMapping(pm.maps, p.regs.PC) == nil {
				pm.maps = m.codeMappings(m.procDir(p.pid), p.regs.PC)
			}
			maps[k] = pm
		}
		p.maps = pm.maps
		m.held.add(p.pid, 1) // until a drain takes it (takeFinished)
		if !m.send(request{parked: p}) {
			m.finish(p, nil) // the worker's queue is full: as walked so far
		}
	})
	if err != nil && ctx.Err() == nil {
		m.log.Warn("deferred samples", "err", err)
	}
}

// codeMappings are the file-backed code mappings of the process whose
// /proc directory is dir (none when it has exited), from a read of its
// maps at most mapsFresh old that holds pc.
func (m *tableManager) codeMappings(dir string, pc uint64) []process.Mapping {
	all, _ := m.pfiles.Maps().Read(dir, time.Now().Add(-mapsFresh), pc)
	var out []process.Mapping
	for _, mp := range all {
		if mp.Exec() && !mp.Anonymous() && !mp.Pseudo() {
			out = append(out, mp)
		}
	}
	return out
}

// fileMappings keeps the mappings of files in ms (not the vDSO, nor
// anonymous memory, which have no inode), as codeMappings does.
func fileMappings(ms []process.Mapping) []process.Mapping {
	return slices.DeleteFunc(ms, func(m process.Mapping) bool { return m.Inode == 0 })
}

func findMapping(ms []process.Mapping, pc uint64) *process.Mapping {
	for i := range ms {
		if ms[i].Start <= pc && pc < ms[i].End {
			return &ms[i]
		}
	}
	return nil
}

// inodeKey is a file's device (the kernel's encoding, as in fileKey) and
// inode number: what /proc/PID/maps says of a mapping's file.
type inodeKey struct {
	dev uint32
	ino uint64
}

func mappingInode(mp *process.Mapping) inodeKey {
	return inodeKey{dev: kernelDev(mp.Dev), ino: mp.Inode}
}

// park takes a deferred sample (worker goroutine).
func (m *tableManager) park(p *parked) {
	if len(m.parked) >= maxParked {
		m.finishParked(m.parked[0], m.byInode())
		m.parked = m.parked[1:]
	}
	m.parked = append(m.parked, p)
}

// byInode indexes the worker's file entries by device and inode (an entry
// with a table first, where two generations of an inode number have one).
// The index is kept until an entry changes (setEntry, sweep): while
// samples are parked the worker asks for it after every request, and a
// host has thousands of entries.
func (m *tableManager) byInode() map[inodeKey]*fileEntry {
	if m.inodes != nil {
		return m.inodes
	}
	idx := make(map[inodeKey]*fileEntry, len(m.entries))
	for k, e := range m.entries {
		ik := inodeKey{dev: k.Dev, ino: k.Ino}
		if old := idx[ik]; old == nil || old.tab == nil {
			idx[ik] = e
		}
	}
	m.inodes = idx
	return idx
}

// resolveParked finishes the deferred samples whose table has been
// answered (with or without rows), and those past their time (worker
// goroutine).
func (m *tableManager) resolveParked() {
	if len(m.parked) == 0 {
		return
	}
	now := time.Now()
	idx := m.byInode()
	keep := m.parked[:0]
	for _, p := range m.parked {
		mp := findMapping(p.maps, p.regs.PC)
		if mp != nil && idx[mappingInode(mp)] == nil && !now.After(p.deadline) {
			keep = append(keep, p)
			continue
		}
		if !m.tryFinishParked(p, idx, now.After(p.deadline)) {
			keep = append(keep, p) // its walk goes on into a file whose table is not in yet
		}
	}
	clear(m.parked[len(keep):])
	m.parked = keep
	m.dropDecoded()
}

// dropDecoded lets the tables read back for deferred samples go once none
// waits: a big program's table is megabytes.
func (m *tableManager) dropDecoded() {
	if len(m.parked) == 0 && len(m.decoded) > 0 {
		clear(m.decoded)
	}
}

// flushWait is a drain waiting for the deferred samples of processes
// that are gone (or of all, at the last drain), some of whose tables a
// builder is still building (worker state).
type flushWait struct {
	done     chan struct{}
	all      bool
	deadline time.Time
}

// flushGrace is how long a drain waits for a table being built for the
// deferred samples of a process that is gone: the profiler forgets a dead
// process's mappings after the drain that follows its exit, so those
// samples must be in that drain, and a 50 ms process often exits before
// its program's table is built.
const flushGrace = 300 * time.Millisecond

// flush takes a drain's flush request (worker goroutine); done is closed
// once the samples it waits for are finished (see checkFlushes).
func (m *tableManager) flush(done chan struct{}, all bool) {
	m.flushWaits = append(m.flushWaits, flushWait{done: done, all: all, deadline: time.Now().Add(flushGrace)})
	m.checkFlushes()
}

// checkFlushes finishes the deferred samples the waiting drains need (of
// processes that are gone, or all) whose tables are in, are not being
// built, or have been waited for long enough, and releases the drains
// that need nothing more (worker goroutine).
func (m *tableManager) checkFlushes() {
	if len(m.flushWaits) == 0 {
		return
	}
	now := time.Now()
	building := map[inodeKey]bool{}
	for _, keys := range m.inflight {
		for _, k := range keys {
			building[inodeKey{dev: k.Dev, ino: k.Ino}] = true
		}
	}
	idx := m.byInode()
	keep := m.flushWaits[:0]
	for _, w := range m.flushWaits {
		force := now.After(w.deadline)
		waiting := false
		parked := m.parked[:0]
		for _, p := range m.parked {
			if !w.all && process.Alive(m.procDir(p.pid)) {
				parked = append(parked, p)
				continue
			}
			if mp := findMapping(p.maps, p.regs.PC); !force && mp != nil && idx[mappingInode(mp)] == nil && building[mappingInode(mp)] {
				waiting = true
				parked = append(parked, p)
				continue
			}
			m.finishParked(p, idx)
		}
		clear(m.parked[len(parked):])
		m.parked = parked
		if waiting {
			keep = append(keep, w)
		} else if w.done != nil {
			close(w.done)
		}
	}
	clear(m.flushWaits[len(keep):])
	m.flushWaits = keep
	m.dropDecoded()
}

// takeFinished returns the deferred samples finished so far, after the
// worker has taken every one the kernel sent before now and finished
// those of processes that are gone (see checkFlushes), or all of them. Drain
// calls it.
func (m *tableManager) takeFinished(all bool) []Sample {
	// Records submitted before the drain's barrier are in the ring: let
	// the reader hand them to the worker.
	for end := time.Now().Add(100 * time.Millisecond); m.deferredRing.AvailableBytes() > 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	if m.send(request{flush: true, flushAll: all, done: done}) {
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		case <-m.ctx.Done():
		}
	}
	out := m.finished.take()
	for _, s := range out {
		m.held.add(s.Pid, -1)
	}
	return out
}

// nextDeadline is when the first parked sample's time, or a waiting
// drain's, is up (zero: none).
func (m *tableManager) nextDeadline() time.Time {
	var t time.Time
	for _, p := range m.parked {
		if t.IsZero() || p.deadline.Before(t) {
			t = p.deadline
		}
	}
	for _, w := range m.flushWaits {
		if t.IsZero() || w.deadline.Before(t) {
			t = w.deadline
		}
	}
	return t
}

// finishParked walks the rest of p's stack with the tables the kernel has
// and queues the sample.
func (m *tableManager) finishParked(p *parked, idx map[inodeKey]*fileEntry) {
	m.tryFinishParked(p, idx, true)
}

// tryFinishParked is finishParked, except that unless force is set a walk
// that stops in a file with no table yet (no entry: not answered, perhaps
// not asked for) leaves the sample parked and returns false. The kernel
// defers a sample at the first frame whose table is missing, often its
// leaf: the frames above may be in another file new to the profiler (the
// C library, for a program running before it started), whose table the
// kernel asks for at a later sample of the process, or the warm-up is
// building.
func (m *tableManager) tryFinishParked(p *parked, idx map[inodeKey]*fileEntry, force bool) bool {
	missing := false
	tableFor := func(pc uint64) (*unwinder.Table, uint64, bool) {
		mp := findMapping(p.maps, pc)
		if mp == nil && !p.reread {
			// The mappings came from the kernel's list, which has those
			// its walker met: the walk goes on into a library it has not
			// (the C library above a program's main, when the program
			// ran before the profiler started). The maps, while it lives.
			p.reread = true
			if ms := m.codeMappings(m.procDir(p.pid), pc); findMapping(ms, pc) != nil {
				p.maps = ms
				mp = findMapping(p.maps, pc)
			}
		}
		if mp == nil {
			return nil, 0, false
		}
		e := idx[mappingInode(mp)]
		if e == nil {
			missing = true
		}
		if e == nil || e.tab == nil {
			return nil, 0, false
		}
		t := m.decodedTable(e.tab)
		if t == nil {
			return nil, 0, false
		}
		return t, process.Bias(*mp, e.tab.adj), true
	}
	s, walked := m.finished1(p, tableFor)
	if missing && !force && s.UserTruncated {
		return false
	}
	m.queueFinished(s, walked)
	return true
}

// finish completes p's user stack with tableFor (nil: none) and queues
// the sample for Drain. Without a table for the frame the kernel stopped
// trusting, the sample is the kernel's walk.
func (m *tableManager) finish(p *parked, tableFor func(pc uint64) (*unwinder.Table, uint64, bool)) {
	m.queueFinished(m.finished1(p, tableFor))
}

// finished1 is p's sample with its user stack completed with tableFor
// (see finish); walked says the tables took it further than the kernel.
func (m *tableManager) finished1(p *parked, tableFor func(pc uint64) (*unwinder.Table, uint64, bool)) (s Sample, walked bool) {
	s = Sample{Pid: p.pid, Tid: p.tid, Comm: p.comm, Kernel: p.kern, Count: 1,
		User: p.pcs, UserTruncated: !p.kernelComplete, UserCallerUnknown: p.kernelCallerUnknown}
	if tableFor != nil {
		if _, _, ok := tableFor(p.regs.PC); ok {
			walked = m.walkOn(p, tableFor, &s)
		}
	}
	return s, walked
}

// queueFinished counts s (walked: see finished1) and queues it for Drain.
func (m *tableManager) queueFinished(s Sample, walked bool) {
	if walked {
		m.stats.deferredFinished.Add(1)
	}
	if s.UserTruncated {
		m.stats.deferredIncomplete.Add(1)
	}
	m.finished.add(s)
}

// walkOn walks p's stack on from the frame the kernel stopped trusting,
// with tables, and sets s's user stack (returning true) when it gets
// further than the kernel's walk or as far.
func (m *tableManager) walkOn(p *parked, tableFor func(pc uint64) (*unwinder.Table, uint64, bool), s *Sample) bool {
	readMem := func(addr uint64, buf []byte) error {
		if addr < p.regs.SP || addr-p.regs.SP+uint64(len(buf)) > uint64(len(p.stack)) {
			return errOutsideCopy
		}
		copy(buf, p.stack[addr-p.regs.SP:])
		return nil
	}
	rest, complete := unwinder.UnwindFrom(p.regs, p.exact, readMem, tableFor, unwindMaxFrames-p.at)
	if len(rest) == 0 {
		return false
	}
	user := append(p.pcs[:p.at:p.at], rest...)
	if !complete {
		// The copy of the stack may end before the stack does (a Go
		// system stack whose caller runs on the goroutine's): go on
		// with the kernel's frames after the last frame both walks have.
		last := rest[len(rest)-1]
		j := slices.Index(p.pcs[p.at:], last)
		switch {
		case j >= 0:
			user = append(user, p.pcs[p.at+j+1:]...)
			complete = p.kernelComplete
		case len(user) <= len(p.pcs):
			return false // the kernel's walk stands
		}
		// Else the walk went further than the kernel's (which stopped
		// at a frameless frame): its frames are right, if incomplete.
	}
	s.User = user[:min(len(user), unwindMaxFrames)]
	s.UserTruncated = !complete
	// The leaf's caller is known when the leaf is the frame walked on
	// from (it has a table); else the kernel's walk of the leaf stands.
	s.UserCallerUnknown = p.at > 0 && p.kernelCallerUnknown
	return true
}

var errOutsideCopy = errors.New("outside the copied stack")

// unwindMaxFrames is UNWIND_MAX_FRAMES, the frames a user stack keeps.
const unwindMaxFrames = len(bpf.ScorchUnwindStack{}.Pcs)

// maxDecoded bounds the tables kept decoded for finishing deferred
// samples (a few files: the programs that have just started); they go as
// soon as no deferred sample waits (see dropDecoded).
const maxDecoded = 8

// decodedTable is t as an unwinder.Table, read back from the kernel once
// and kept while t is loaded (worker goroutine).
func (m *tableManager) decodedTable(t *table) *unwinder.Table {
	if d, ok := m.decoded[t]; ok {
		return d
	}
	if len(m.decoded) >= maxDecoded {
		clear(m.decoded)
	}
	d := m.readTable(t)
	m.decoded[t] = d
	return d
}

// readTable reads t's rows back from the kernel's row array.
func (m *tableManager) readTable(t *table) *unwinder.Table {
	b := make([]byte, int(t.rows)*unwinder.RowSize)
	if err := m.readRows(t.first, b); err != nil {
		m.log.Debug("unwind tables: read rows back", "err", err)
		return nil
	}
	tab, err := unwinder.FromBinary(machine(), b)
	if err != nil {
		return nil
	}
	return tab
}

// readRows copies rows [first, first+len(b)/8) of unwind_rows into b.
func (m *tableManager) readRows(first uint32, b []byte) error {
	if ok, err := m.withRows(first, len(b), unix.PROT_READ, func(rows []byte) { copy(b, rows) }); ok {
		return err
	}
	var v uint64
	for i := 0; i < len(b)/unwinder.RowSize; i++ {
		if err := m.rows.Lookup(first+uint32(i), &v); err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(b[i*unwinder.RowSize:], v)
	}
	return nil
}

// machine is the ELF machine of the tables this sampler builds.
func machine() elf.Machine {
	if runtime.GOARCH == "arm64" {
		return elf.EM_AARCH64
	}
	return elf.EM_X86_64
}
