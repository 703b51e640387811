package store

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/web"
)

var (
	_ web.LeveledSource = (*Store)(nil)
	_ web.EncodedSource = (*Store)(nil)
)

// Options configures a Store. Zero values select defaults.
type Options struct {
	// MaxAge deletes windows that ended longer ago than this. Default 24h.
	MaxAge time.Duration
	// MaxBytes bounds the total size of the stored files; the oldest
	// windows are deleted first. Default 1 GiB.
	MaxBytes int64
	// MaxProfileBytes bounds a profile when it is read back, compressed
	// and decompressed. Default 256 MiB.
	MaxProfileBytes int64
	// Logger receives failures (at most one per cause every ten minutes)
	// and the count of files skipped when opening. Nil discards logs.
	Logger *slog.Logger
	// NoRollups leaves the windows as written: no rollups are built in
	// the background (Compact still builds them when called).
	NoRollups bool
}

// Stats counts what a Store holds and did since Open.
type Stats struct {
	Windows int   // windows held, one per target, rollups excluded
	Rollups int   // rollups held, one per target and period
	Merged  int   // windows of all targets held (PutWindowMerged), one per window
	Bytes   int64 // bytes of their files

	Puts      uint64            // windows written, one per target
	PutBytes  uint64            // bytes written (packs and indexes)
	PutErrors map[string]uint64 // failed Puts and PutWindows by cause: "disk_full", "read_only", "permission", "io", "invalid", "closed"
	Pruned    uint64            // windows deleted by retention, one per target
	Corrupt   uint64            // corrupt or partial files found by Open (and removed)
	Skipped   uint64            // indexes or sidecars of an unknown format version, left alone
	ReadErrs  uint64            // Open calls that failed to read a stored window

	RollupsWritten uint64 // rollups written, one per target and period
	RollupErrors   uint64 // targets of a period left without a rollup (a window unreadable, or profiles that do not merge)
}

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("store: closed")

const logEvery = 10 * time.Minute

// A Store is a directory of profile windows. Its methods may be called from
// several goroutines.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// wmu serializes changes to the directory (PutWindow, Prune), so that
	// deleting an empty hour directory cannot race with writing into it.
	wmu sync.Mutex

	mu      sync.RWMutex
	windows []*entry // sorted by start, then ID
	byID    map[string]*entry
	labels  map[string]*labelSet // interned label sets by labelKey
	values  map[uint64]*valueSet // interned value sets by hashValues
	bytes   int64                // of the files referenced by windows
	maxDur  int64                // longest duration of a window of level 0, bounds the search in Windows
	closed  bool
	st      Stats
	lastLog map[string]time.Time
	rollups int // entries of level > 0 in windows
	merged  int // entries of level 0 that merge the others of their pack

	slab []entry // where newEntryLocked allocates
	ids  []byte  // where newEntryLocked copies IDs

	// What the views above level 0 read (see tiers.go).
	rollupAt   map[rollupKey]*entry  // rollups of each level by period and target
	exposed    []*entry              // entries of level 0 no 5-minute rollup hides, sorted like windows
	rollupList [len(levels)][]*entry // entries of each level above 0, sorted like windows
	scanning   bool                  // Open scans: the lists wait for indexHiddenLocked

	// cmu serializes compactions (see rollup.go); poke wakes the
	// compactor goroutine.
	cmu       sync.Mutex
	compacted [len(levels)]int64 // per level, the periods before this start are done; under cmu
	poke      chan struct{}
	cancel    context.CancelFunc // stops the compactor
	stopped   chan struct{}      // closed when it has
}

// entry is one target's window in the index: a day of a busy host's
// windows is hundreds of thousands of them, so it is kept small (96 bytes
// and its ID), its labels and listed values shared with the other windows
// that have the same, and it is not an object of its own: entries are
// allocated side by side in slabs and their IDs in shared buffers (see
// newEntryLocked), so that the garbage collector, which marks every
// object of the index at each cycle, finds a few hundred of them rather
// than two per window (it took 40% of the viewer's CPU on a day's store).
type entry struct {
	id      string
	start   int64 // Unix ns
	dur     int64 // ns
	samples int64
	off     int64 // offset of the gzipped profile in files.data
	pbSize  int64 // bytes of the gzipped profile
	labels  *labelSet
	values  *valueSet // see indexTarget.Values; nil when none are listed
	files   *files
	crc     uint32
	covers  int32 // of a window's merge: the other targets of its pack, which it holds
	level   int8  // 0, or the level of a rollup
	hidden  int8  // the finest level whose rollup of this target holds this entry's period, 0 if none (see tiers.go)
	all     bool  // a merge of all targets (allTargetsLabel): a rollup, or a window's (PutWindowMerged)
	allVals bool  // see indexTarget.AllValues
}

// files are the files that hold stored windows and are deleted together:
// a pack and its index, shared by the targets of a window, or in the
// per-target layout one target's .pb.gz and .json sidecar.
type files struct {
	hour  string // directory
	data  string // name of the pack or .pb.gz
	index string // name of the index or sidecar, the commit record
	seq   int    // of a pack; -1 in the per-target layout
	size  int64  // bytes of both
	refs  int    // entries that point here
}

type labelSet struct {
	key  string
	m    map[string]string // never modified
	view map[string]string // m as the viewer sees it (see webWindow); never modified
	refs int
}

// valueSet is one distinct indexTarget.Values of the index, shared by the
// windows that list the same values (the windows of a service whose
// processes live for minutes, one after another). The sets are kept by a
// hash of their contents (hashValues), those with the same hash chained.
type valueSet struct {
	m    map[string][]string // never modified
	hash uint64
	refs int
	next *valueSet // another set with the same hash
}

// get returns the values of vs, nil for none.
func (vs *valueSet) get() map[string][]string {
	if vs == nil {
		return nil
	}
	return vs.m
}

// Item is one target's profile of a window.
type Item struct {
	Labels  map[string]string
	Profile *profile.Profile
}

// Open opens the store in dir, creating the directory if needed, and
// indexes the windows found there. Partial and corrupt files are removed
// and counted in Stats.Corrupt. Retention is applied at once.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 24 * time.Hour
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.MaxProfileBytes <= 0 {
		opts.MaxProfileBytes = 256 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{
		dir:      dir,
		opts:     opts,
		log:      log.With("component", "store", "dir", dir),
		now:      time.Now,
		byID:     make(map[string]*entry),
		labels:   make(map[string]*labelSet),
		lastLog:  make(map[string]time.Time),
		rollupAt: make(map[rollupKey]*entry),
		scanning: true,
	}
	s.st.PutErrors = make(map[string]uint64)
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.indexHiddenLocked()
	if s.st.Corrupt > 0 || s.st.Skipped > 0 {
		s.log.Warn("store: skipped files when opening", "corrupt_or_partial_removed", s.st.Corrupt, "unknown_version_kept", s.st.Skipped)
	}
	s.log.Debug("store: opened", "windows", len(s.windows), "bytes", s.bytes)
	if err := s.Prune(); err != nil {
		s.log.Warn("store: applying retention", "err", err)
	}
	if !opts.NoRollups {
		var ctx context.Context
		ctx, s.cancel = context.WithCancel(context.Background())
		s.poke, s.stopped = make(chan struct{}, 1), make(chan struct{})
		go s.compactor(ctx)
		s.poke <- struct{}{}
	}
	return s, nil
}

// scan indexes the windows in s.dir.
func (s *Store) scan() error {
	hours, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, h := range hours {
		if !h.IsDir() || len(h.Name()) != len(hourLayout) {
			continue
		}
		if _, err := time.Parse(hourLayout, h.Name()); err != nil {
			continue
		}
		s.scanHour(h.Name())
	}
	return nil
}

// scanHour indexes the windows of one hour directory: those of the
// per-target layout first, then packs by start and sequence number, so
// that a later write of a target replaces an earlier one.
func (s *Store) scanHour(hour string) {
	hdir := filepath.Join(s.dir, hour)
	dirents, err := os.ReadDir(hdir)
	if err != nil {
		s.log.Warn("store: reading directory", "err", err)
		return
	}
	profiles := make(map[string]int64) // ID -> size of .pb.gz
	packs := make(map[string]int64)    // base name -> size of .pack
	var sidecars, indexes []string
	for _, f := range dirents {
		name := f.Name()
		switch {
		case !f.Type().IsRegular():
		case strings.HasPrefix(name, ".tmp-"):
			s.removeCorrupt(filepath.Join(hdir, name))
		case strings.HasSuffix(name, profileExt):
			if info, err := f.Info(); err == nil {
				profiles[strings.TrimSuffix(name, profileExt)] = info.Size()
			}
		case strings.HasSuffix(name, sidecarExt):
			sidecars = append(sidecars, strings.TrimSuffix(name, sidecarExt))
		case strings.HasSuffix(name, packExt):
			if info, err := f.Info(); err == nil {
				packs[strings.TrimSuffix(name, packExt)] = info.Size()
			}
		case strings.HasSuffix(name, indexExt):
			indexes = append(indexes, strings.TrimSuffix(name, indexExt))
		}
	}
	for _, id := range sidecars {
		pbSize, hasProfile := profiles[id]
		delete(profiles, id)
		m, err := s.readMeta(hdir, id)
		if errors.Is(err, errFutureVersion) {
			s.st.Skipped++
			continue
		}
		if err == nil && (!hasProfile || pbSize != m.Size) {
			err = fmt.Errorf("profile of %s is missing or not %d bytes", id, m.Size)
		}
		if err == nil && m.Start.UTC().Format(hourLayout) != hour {
			err = fmt.Errorf("window %s is in directory %s", id, hour)
		}
		if err != nil {
			s.log.Debug("store: corrupt window", "err", err)
			s.removeCorrupt(filepath.Join(hdir, id+sidecarExt))
			if hasProfile {
				s.removeCorrupt(filepath.Join(hdir, id+profileExt))
			}
			continue
		}
		jsonSize := int64(0)
		if info, err := os.Stat(filepath.Join(hdir, id+sidecarExt)); err == nil {
			jsonSize = info.Size()
		}
		fl := &files{hour: hour, data: id + profileExt, index: id + sidecarExt, seq: -1, size: m.Size + jsonSize}
		s.addScanned(&entry{
			id: m.ID, start: m.Start.UnixNano(), dur: m.DurationNS, samples: m.Samples,
			pbSize: m.Size, crc: m.CRC32, files: fl,
		}, m.Labels, nil)
	}
	for id := range profiles { // profiles without a sidecar: a Put that did not finish
		s.removeCorrupt(filepath.Join(hdir, id+profileExt))
	}

	type named struct {
		name  string
		start time.Time
		seq   int
	}
	var order []named
	for _, name := range indexes {
		start, seq, err := parsePackName(name)
		if err != nil { // parseIndex reports it below
			start, seq = time.Time{}, -1
		}
		order = append(order, named{name, start, seq})
	}
	slices.SortFunc(order, func(a, b named) int {
		if c := a.start.Compare(b.start); c != 0 {
			return c
		}
		return a.seq - b.seq
	})
	for _, n := range order {
		packSize, hasPack := packs[n.name]
		delete(packs, n.name)
		x, want, err := s.readIndex(hdir, n.name)
		if errors.Is(err, errFutureVersion) {
			s.st.Skipped++
			continue
		}
		if err == nil && (!hasPack || packSize != want) {
			err = fmt.Errorf("pack %s is missing or not %d bytes", n.name, want)
		}
		if err == nil && x.Start.UTC().Format(hourLayout) != hour {
			err = fmt.Errorf("pack %s is in directory %s", n.name, hour)
		}
		if err != nil {
			s.log.Debug("store: corrupt window", "err", err)
			s.removeCorrupt(filepath.Join(hdir, n.name+indexExt))
			if hasPack {
				s.removeCorrupt(filepath.Join(hdir, n.name+packExt))
			}
			continue
		}
		indexSize := int64(0)
		if info, err := os.Stat(filepath.Join(hdir, n.name+indexExt)); err == nil {
			indexSize = info.Size()
		}
		fl := &files{hour: hour, data: n.name + packExt, index: n.name + indexExt, seq: n.seq, size: packSize + indexSize}
		for i := range x.Targets {
			t := &x.Targets[i]
			e := &entry{
				id: t.ID, level: int8(x.Level), start: x.Start.UnixNano(), dur: x.DurationNS, samples: t.Samples,
				off: t.Offset, pbSize: t.Size, crc: t.CRC32, files: fl, allVals: t.AllValues,
			}
			markMerged(e, x, t)
			s.addScanned(e, t.Labels, t.Values)
		}
	}
	for name := range packs { // packs without an index: a PutWindow that did not finish
		s.removeCorrupt(filepath.Join(hdir, name+packExt))
	}
}

// markMerged sets e.all and e.covers for target t of index x: the
// rollup of all targets of a period (version 2), or a window's merge of
// the other targets of its pack (version 3, the last target).
func markMerged(e *entry, x *packIndex, t *indexTarget) {
	switch {
	case x.Version == rollupIndexVersion:
		e.all = t.Labels[allTargetsLabel] != ""
	case x.Version == mergedIndexVersion && t == &x.Targets[len(x.Targets)-1]:
		e.all, e.covers = true, int32(len(x.Targets)-1)
	}
}

// addScanned indexes e during scan, and removes the files of a window it
// replaces if no other window is left in them: the agent stopped between
// writing a window and deleting what it replaced.
func (s *Store) addScanned(e *entry, labels map[string]string, values map[string][]string) {
	if freed := s.addLocked(e, labels, values); freed != nil {
		os.Remove(filepath.Join(s.dir, freed.hour, freed.index))
		os.Remove(filepath.Join(s.dir, freed.hour, freed.data))
	}
}

func (s *Store) readMeta(hdir, id string) (*meta, error) {
	data, err := readLimited(filepath.Join(hdir, id+sidecarExt), maxMetaSize)
	if err != nil {
		return nil, err
	}
	return parseMeta(data, id)
}

func (s *Store) readIndex(hdir, name string) (*packIndex, int64, error) {
	data, err := readLimited(filepath.Join(hdir, name+indexExt), maxIndexSize)
	if err != nil {
		return nil, 0, err
	}
	return parseIndex(data, name)
}

// readLimited reads a file, or its first limit+1 bytes if it is larger.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit+1))
}

// removeCorrupt counts and removes a corrupt or partial file. On a
// read-only directory the file stays; it is skipped again next time.
func (s *Store) removeCorrupt(path string) {
	s.st.Corrupt++
	os.Remove(path)
}

// byStart orders an entry against a start, for binary searches of
// windows.
func byStart(e *entry, start int64) int { return cmp.Compare(e.start, start) }

func compareEntries(a, b *entry) int {
	switch {
	case a.start < b.start:
		return -1
	case a.start > b.start:
		return 1
	}
	return strings.Compare(a.id, b.id)
}

// addLocked indexes e with the given labels and listed values, which it
// interns. A window with the same ID is replaced; if that leaves its files
// holding no window, addLocked returns them for the caller to delete.
func (s *Store) addLocked(e0 *entry, labels map[string]string, values map[string][]string) (freed *files) {
	e := s.newEntryLocked(e0)
	if old := s.byID[e.id]; old != nil {
		if s.removeLocked(old) {
			freed = old.files
		}
	}
	key := labelKey(labels)
	ls := s.labels[key]
	if ls == nil {
		ls = &labelSet{key: key, m: maps.Clone(labels)}
		ls.view = ls.m
		if _, ok := ls.m[allTargetsLabel]; ok {
			ls.view = maps.Clone(ls.m)
			delete(ls.view, allTargetsLabel)
		}
		s.labels[key] = ls
	}
	ls.refs++
	e.labels = ls
	e.values = s.internValuesLocked(values)
	if e.files.refs++; e.files.refs == 1 {
		s.bytes += e.files.size
	}
	i, _ := slices.BinarySearchFunc(s.windows, e, compareEntries) // usually the end
	s.windows = slices.Insert(s.windows, i, e)
	s.byID[e.id] = e
	s.listLocked(e)
	switch {
	case e.level > 0:
		s.rollups++
	case e.all:
		s.merged++
	default:
		s.maxDur = max(s.maxDur, e.dur)
	}
	return freed
}

// entrySlab is how many entries a slab holds, idBuf the size of a buffer
// of IDs.
const (
	entrySlab = 1024
	idBuf     = 64 << 10
)

// newEntryLocked returns a copy of e0 in the current slab, with its ID
// copied into the current buffer of IDs. Slots are never reused: a slab,
// or a buffer, is freed by the garbage collector once no entry in it is
// referenced (indexed, or held by a reader that listed it), which with
// retention pruning the oldest windows first leaves few partly used.
func (s *Store) newEntryLocked(e0 *entry) *entry {
	if len(s.slab) == cap(s.slab) {
		s.slab = make([]entry, 0, entrySlab)
	}
	s.slab = append(s.slab, *e0)
	e := &s.slab[len(s.slab)-1]
	if n := len(e0.id); n > 0 {
		if n > cap(s.ids)-len(s.ids) {
			s.ids = make([]byte, 0, max(idBuf, n))
		}
		s.ids = append(s.ids, e0.id...)
		e.id = unsafe.String(&s.ids[len(s.ids)-n], n)
	}
	return e
}

// removeLocked drops e from the index (not from disk) and reports whether
// its files hold no other window.
func (s *Store) removeLocked(e *entry) bool {
	i, found := slices.BinarySearchFunc(s.windows, e, compareEntries)
	if found {
		s.windows = slices.Delete(s.windows, i, i+1)
	}
	freed := s.dropLocked(e)
	s.unlistLocked(e)
	return freed
}

// dropLocked is removeLocked but leaves s.windows and the views' lists to
// the caller.
func (s *Store) dropLocked(e *entry) bool {
	delete(s.byID, e.id)
	s.forgetRollupLocked(e)
	switch {
	case e.level > 0:
		s.rollups--
	case e.all:
		s.merged--
	}
	if e.labels.refs--; e.labels.refs == 0 {
		delete(s.labels, e.labels.key)
	}
	s.releaseValuesLocked(e.values)
	if e.files.refs--; e.files.refs == 0 {
		s.bytes -= e.files.size
		return true
	}
	return false
}

// internValuesLocked returns the shared set of the values vals, with a
// new reference; nil for none.
func (s *Store) internValuesLocked(vals map[string][]string) *valueSet {
	if len(vals) == 0 {
		return nil
	}
	h := hashValues(vals)
	for vs := s.values[h]; vs != nil; vs = vs.next {
		if maps.EqualFunc(vs.m, vals, slices.Equal) {
			vs.refs++
			return vs
		}
	}
	if s.values == nil {
		s.values = make(map[uint64]*valueSet)
	}
	vs := &valueSet{m: vals, hash: h, refs: 1, next: s.values[h]}
	s.values[h] = vs
	return vs
}

// releaseValuesLocked drops a reference to vs (nil: none).
func (s *Store) releaseValuesLocked(vs *valueSet) {
	if vs == nil {
		return
	}
	if vs.refs--; vs.refs > 0 {
		return
	}
	head := s.values[vs.hash]
	if head == vs {
		if vs.next == nil {
			delete(s.values, vs.hash)
		} else {
			s.values[vs.hash] = vs.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == vs {
			p.next = vs.next
			return
		}
	}
}

// hashValues is the FNV-1a hash of vals, its labels in order, each with
// its values in the order listed.
func hashValues(vals map[string][]string) uint64 {
	keys := slices.Sorted(maps.Keys(vals))
	h := fnv.New64a()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		for _, v := range vals[k] {
			h.Write([]byte(v))
			h.Write([]byte{1})
		}
		h.Write([]byte{2})
	}
	return h.Sum64()
}

// Put stores the profile of the window of labels that starts at start and
// lasts dur: PutWindow with one item.
func (s *Store) Put(start time.Time, dur time.Duration, labels map[string]string, p *profile.Profile) error {
	return s.PutWindow(start, dur, []Item{{Labels: labels, Profile: p}})
}

// PutWindow stores the profiles of the targets of the window that starts
// at start and lasts dur, in one pack and one index whatever the number of
// targets. It serializes the profiles, so nothing else may use them during
// the call. A target with the same start and labels as a stored window
// replaces it. If any item is invalid, nothing is stored. An empty window
// stores nothing.
func (s *Store) PutWindow(start time.Time, dur time.Duration, items []Item) error {
	return s.PutWindowMerged(start, dur, items, nil)
}

// PutWindowMerged is PutWindow, with merged, if not nil, stored beside
// the targets as the window's profile of all of them: their samples, each
// labelled with its target's labels (sample labels; those all targets
// share are removed from merged's samples and become its window labels).
// The viewer reads it instead of every target's profile where it needs
// none apart (MergedAt); its samples need not carry pids (the agent's do
// not: on a host starting processes all the time they would make it as
// large as all the targets' profiles). Its sample count must be the sum
// of the items'; if not, or with fewer than two items, the window is
// stored without it. PutWindowMerged modifies merged's sample labels.
func (s *Store) PutWindowMerged(start time.Time, dur time.Duration, items []Item, merged *profile.Profile) error {
	if len(items) == 0 {
		return nil
	}
	withMerged := false
	if merged != nil && len(items) > 1 {
		all, err := mergedItem(items, merged)
		if err != nil {
			s.logCause("merged_window", fmt.Errorf("store: window at %v stored without its merged profile: %w", start.UTC(), err))
		} else {
			items, withMerged = append(slices.Clip(items), all), true
		}
	}
	err := s.putWindow(0, start, dur, items, withMerged)
	if err == nil && s.poke != nil {
		select {
		case s.poke <- struct{}{}:
		default:
		}
	}
	if err != nil {
		cause := errCause(err)
		s.mu.Lock()
		s.st.PutErrors[cause]++
		s.mu.Unlock()
		s.logCause(cause, err)
	}
	return err
}

// mergedItem checks the merged profile of a window's items and returns
// it as the item of all targets: its samples lose the labels all targets
// share, which become its labels with allTargetsLabel.
func mergedItem(items []Item, merged *profile.Profile) (Item, error) {
	common := commonLabels(items)
	var want, got int64
	for _, it := range items {
		if it.Profile == nil {
			return Item{}, errors.New("an item has no profile") // checkWindow reports it
		}
		want += totalSamples(it.Profile)
	}
	if got = totalSamples(merged); got != want {
		return Item{}, fmt.Errorf("it holds %d samples, its %d targets %d", got, len(items), want)
	}
	for _, smp := range merged.Sample {
		for k := range common {
			delete(smp.Label, k)
		}
	}
	common[allTargetsLabel] = "all targets"
	return Item{Labels: common, Profile: merged}, nil
}

// commonLabels returns the labels all items have, with the same value.
func commonLabels(items []Item) map[string]string {
	common := maps.Clone(items[0].Labels)
	if common == nil {
		common = map[string]string{}
	}
	for _, it := range items[1:] {
		maps.DeleteFunc(common, func(k, v string) bool { return it.Labels[k] != v })
	}
	return common
}

// totalSamples is the sum of p's values of its viewer's sample type.
func totalSamples(p *profile.Profile) int64 {
	vi := valueIndex(p)
	var n int64
	for _, smp := range p.Sample {
		if vi < len(smp.Value) {
			n += smp.Value[vi]
		}
	}
	return n
}

type invalidError struct{ error }

func (e invalidError) Unwrap() error { return e.error }

// checkWindow checks a window before anything is written, and returns the
// index to write, without offsets, sizes and CRCs, in the order of items.
// merged says the last item is the merge of the others (allTargetsLabel);
// no other item may carry that label.
func checkWindow(level int, start time.Time, dur time.Duration, items []Item, merged bool) (*packIndex, error) {
	switch {
	case start.IsZero() || start.UnixNano() <= 0:
		return nil, invalidError{fmt.Errorf("store: window start %v is not a valid time", start)}
	case dur < 0:
		return nil, invalidError{fmt.Errorf("store: negative window duration %v", dur)}
	case len(items) > maxTargets:
		return nil, invalidError{fmt.Errorf("store: %d targets in a window exceed %d", len(items), maxTargets)}
	}
	start = start.UTC()
	x := &packIndex{Version: indexVersion, Start: start, DurationNS: int64(dur), Level: level, Targets: make([]indexTarget, len(items))}
	switch {
	case level > 0:
		x.Version = rollupIndexVersion
	case merged:
		x.Version = mergedIndexVersion
	}
	seen := make(map[string]int, len(items))
	for i, it := range items {
		if it.Profile == nil {
			return nil, invalidError{fmt.Errorf("store: target %d %v: nil profile", i, it.Labels)}
		}
		if err := checkLabels(it.Labels); err != nil {
			return nil, invalidError{fmt.Errorf("store: target %d: %w", i, err)}
		}
		if _, marked := it.Labels[allTargetsLabel]; marked != (merged && i == len(items)-1) {
			return nil, invalidError{fmt.Errorf("store: target %d %v: the label %s is reserved for the merge of a window's targets", i, it.Labels, allTargetsLabel)}
		}
		if err := it.Profile.CheckValid(); err != nil {
			return nil, invalidError{fmt.Errorf("store: target %d %v: invalid profile: %w", i, it.Labels, err)}
		}
		labels := maps.Clone(it.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		id := levelID(start, labels, level)
		if j, dup := seen[id]; dup {
			return nil, invalidError{fmt.Errorf("store: targets %d and %d have the same labels %v", j, i, labels)}
		}
		seen[id] = i
		x.Targets[i] = indexTarget{ID: id, Labels: labels, Samples: totalSamples(it.Profile), Values: sampleValues(it.Profile), AllValues: true}
	}
	return x, nil
}

// valueLabels are the sample labels whose values a window's index lists.
// The window labels of the targets are sample labels in the rollups of
// all targets (allTargetsLabel), so those list them too.
var valueLabels = []string{"pid", "comm", "service_name", "container_id"}

// maxValues bounds the values listed per label and window.
const maxValues = 256

// sampleValues returns the distinct values of p's sample labels in
// valueLabels (numeric ones in decimal), sorted; a label with none is left
// out, one with more than maxValues is listed with none (indexTarget.
// AllValues).
func sampleValues(p *profile.Profile) map[string][]string {
	var out map[string][]string
	for _, k := range valueLabels {
		set := map[string]bool{}
		for _, s := range p.Sample {
			for _, v := range s.Label[k] {
				set[v] = true
			}
			for _, n := range s.NumLabel[k] {
				set[strconv.FormatInt(n, 10)] = true
			}
			if len(set) > maxValues {
				break
			}
		}
		if len(set) == 0 {
			continue
		}
		if out == nil {
			out = map[string][]string{}
		}
		if len(set) > maxValues {
			out[k] = []string{}
			continue
		}
		out[k] = slices.Sorted(maps.Keys(set))
	}
	return out
}

// putWindow writes the window, or the rollup of the given level.
func (s *Store) putWindow(level int, start time.Time, dur time.Duration, items []Item, merged bool) error {
	x, err := checkWindow(level, start, dur, items, merged)
	if err != nil {
		return err
	}
	start = x.Start

	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	closed := s.closed
	seq := s.nextSeqLocked(start.UnixNano())
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	hour := start.Format(hourLayout)
	hdir := filepath.Join(s.dir, hour)
	if err := s.mkHourDir(hdir); err != nil {
		return err
	}
	for ; seq <= maxSeq; seq++ { // not over a file this store did not index
		_, err1 := os.Lstat(filepath.Join(hdir, packName(start, seq)+indexExt))
		_, err2 := os.Lstat(filepath.Join(hdir, packName(start, seq)+packExt))
		if errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) {
			break
		}
	}
	if seq > maxSeq {
		return fmt.Errorf("store: %d windows written with start %v", maxSeq, start)
	}
	name := packName(start, seq)

	// Pack first, index last: the index commits the window. No fsync (see
	// Durability in the package doc).
	packSize, err := writePack(hdir, name+packExt, items, x)
	if err != nil {
		return err
	}
	xj, err := json.Marshal(x)
	if err == nil && len(xj) > maxIndexSize {
		err = invalidError{fmt.Errorf("store: index of %d bytes exceeds %d", len(xj), maxIndexSize)}
	}
	if err == nil {
		err = writeAtomic(hdir, name+indexExt, xj)
	}
	if err != nil {
		os.Remove(filepath.Join(hdir, name+packExt))
		return err
	}

	fl := &files{hour: hour, data: name + packExt, index: name + indexExt, seq: seq, size: packSize + int64(len(xj))}
	var freed []*files
	s.mu.Lock()
	for i := range x.Targets {
		t := &x.Targets[i]
		e := &entry{
			id: t.ID, level: int8(level), start: start.UnixNano(), dur: int64(dur), samples: t.Samples,
			off: t.Offset, pbSize: t.Size, crc: t.CRC32, files: fl, allVals: t.AllValues,
		}
		markMerged(e, x, t)
		if f := s.addLocked(e, t.Labels, t.Values); f != nil {
			freed = append(freed, f)
		}
	}
	if level == 0 {
		s.st.Puts += uint64(len(x.Targets))
		if merged {
			s.st.Puts--
		}
	} else {
		s.st.RollupsWritten += uint64(len(x.Targets))
	}
	s.st.PutBytes += uint64(fl.size)
	freed = append(freed, s.victimsLocked()...)
	s.mu.Unlock()
	return s.deleteFiles(freed)
}

// nextSeqLocked returns the sequence number after those of the packs held
// with the given start.
func (s *Store) nextSeqLocked(start int64) int {
	i, _ := slices.BinarySearchFunc(s.windows, start, byStart)
	seq := 0
	for _, e := range s.windows[i:] {
		if e.start != start {
			break
		}
		seq = max(seq, e.files.seq+1)
	}
	return seq
}

// writePack serializes the profiles of items back to back into dir/name,
// through a temporary file renamed into place, and fills in the offsets,
// sizes and CRCs of x. It returns the size of the pack. It does not sync:
// see Durability in the package doc.
func writePack(dir, name string, items []Item, x *packIndex) (size int64, err error) {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 256<<10)
	var raw, gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	for i, it := range items {
		raw.Reset()
		gz.Reset()
		if err := gzipProfile(it.Profile, &raw, &gz, zw); err != nil {
			return 0, invalidError{fmt.Errorf("store: target %d %v: serializing profile: %w", i, it.Labels, err)}
		}
		t := &x.Targets[i]
		t.Offset, t.Size, t.CRC32 = size, int64(gz.Len()), crc32.ChecksumIEEE(gz.Bytes())
		if _, err := bw.Write(gz.Bytes()); err != nil {
			return 0, fmt.Errorf("store: writing %s: %w", tmp, err)
		}
		size += int64(gz.Len())
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("store: writing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("store: closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return size, nil
}

// mkHourDir creates an hour directory and makes its entry durable.
func (s *Store) mkHourDir(hdir string) error {
	if _, err := os.Stat(hdir); err == nil {
		return nil
	}
	if err := os.Mkdir(hdir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(s.dir)
}

// writeAtomic writes data to dir/name through a temporary file renamed into
// place, so readers never see part of it. It does not sync: see Durability
// in the package doc.
func writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("store: writing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store: closing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: syncing directory %s: %w", dir, err)
	}
	return nil
}

// Prune applies retention: it deletes windows that ended more than MaxAge
// ago, then the oldest windows while the store exceeds MaxBytes.
func (s *Store) Prune() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	victims := s.victimsLocked()
	s.mu.Unlock()
	return s.deleteFiles(victims)
}

// victimsLocked removes from the index the windows retention deletes and
// returns their files. It deletes all targets of a start together: they
// share a pack.
func (s *Store) victimsLocked() []*files {
	cutoff := s.now().Add(-s.opts.MaxAge).UnixNano()
	var victims []*files
	var dropped []*entry // rollups
	n := 0
	for n < len(s.windows) {
		start, end := s.windows[n].start, int64(math.MinInt64)
		j := n
		for ; j < len(s.windows) && s.windows[j].start == start; j++ {
			end = max(end, start+s.windows[j].dur)
		}
		// Windows are ordered by start, not end: a long window can end
		// after a later short one. Retention by age checks the
		// start-ordered prefix only, which deletes oldest first and errs
		// towards keeping data.
		if end >= cutoff && s.bytes <= s.opts.MaxBytes {
			break
		}
		for _, e := range s.windows[n:j] {
			if s.dropLocked(e) {
				victims = append(victims, e.files)
			}
			if e.level > 0 {
				dropped = append(dropped, e)
			}
		}
		n = j
	}
	s.windows = slices.Delete(s.windows, 0, n)
	if n > 0 {
		var first *entry
		if len(s.windows) > 0 {
			first = s.windows[0]
		}
		s.pruneListsLocked(first, dropped)
	}
	s.st.Pruned += uint64(n)
	return victims
}

// deleteFiles removes files of windows no longer indexed, index or sidecar
// first, and hour directories left empty. It returns the first error.
func (s *Store) deleteFiles(victims []*files) error {
	var first error
	hours := make(map[string]bool)
	for _, f := range victims {
		hours[f.hour] = true
		for _, name := range []string{f.index, f.data} {
			err := os.Remove(filepath.Join(s.dir, f.hour, name))
			if err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
				first = fmt.Errorf("store: pruning: %w", err)
			}
		}
	}
	for hour := range hours {
		os.Remove(filepath.Join(s.dir, hour)) // fails, as it should, unless empty
	}
	if first != nil {
		s.logCause("prune_"+errCause(first), first)
	}
	return first
}

// Windows lists the windows that overlap [from, to), oldest first, as
// the agent wrote them (level 0: no rollups).
func (s *Store) Windows(ctx context.Context, from, to time.Time) ([]web.Window, error) {
	return s.windowsAt(ctx, from, to, 0, nil, nil)
}

// Open loads the profile of the window with the given ID. The error wraps
// fs.ErrNotExist if there is no such window (it may have been pruned).
func (s *Store) Open(ctx context.Context, id string) (*profile.Profile, error) {
	e, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	p, err := s.read(e)
	if err != nil {
		s.mu.Lock()
		s.st.ReadErrs++
		s.mu.Unlock()
		return nil, err
	}
	return p, nil
}

// lookup returns window id's entry.
func (s *Store) lookup(ctx context.Context, id string) (*entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	e, closed := s.byID[id], s.closed
	s.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if e == nil {
		if len(id) > 64 {
			id = id[:64] + "..."
		}
		return nil, fmt.Errorf("store: no window %q: %w", id, fs.ErrNotExist)
	}
	return e, nil
}

// OpenEncoded returns window id's profile as Open does, but encoded:
// pprof's protobuf, not compressed, as PutWindow wrote it (its time and
// duration may be unset). The viewer decodes it into its own compact form
// (web.EncodedSource).
func (s *Store) OpenEncoded(ctx context.Context, id string) ([]byte, error) {
	e, err := s.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	raw, err := s.readEncoded(e)
	if err != nil {
		s.mu.Lock()
		s.st.ReadErrs++
		s.mu.Unlock()
		return nil, err
	}
	return raw, nil
}

func (s *Store) read(e *entry) (*profile.Profile, error) {
	raw, err := s.readEncoded(e)
	if err != nil {
		return nil, err
	}
	p, err := profile.ParseUncompressed(raw)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", filepath.Join(s.dir, e.files.hour, e.files.data), err)
	}
	if p.TimeNanos == 0 {
		p.TimeNanos = e.start
	}
	if p.DurationNanos == 0 {
		p.DurationNanos = e.dur
	}
	return p, nil
}

// readEncoded reads e's profile, checks it against its CRC and
// decompresses it.
func (s *Store) readEncoded(e *entry) ([]byte, error) {
	path := filepath.Join(s.dir, e.files.hour, e.files.data)
	if e.pbSize > s.opts.MaxProfileBytes {
		return nil, fmt.Errorf("store: %s: profile %s of %d bytes exceeds the limit of %d", path, e.id, e.pbSize, s.opts.MaxProfileBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	gz, err := io.ReadAll(io.NewSectionReader(f, e.off, e.pbSize))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if int64(len(gz)) != e.pbSize || crc32.ChecksumIEEE(gz) != e.crc {
		return nil, fmt.Errorf("store: %s: the %d bytes at offset %d (profile %s) are short or fail their CRC", path, e.pbSize, e.off, e.id)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	// gzip's trailer gives the size (modulo 2^32): read into a buffer of
	// that size rather than one doubled as it fills, which would take up
	// to twice the memory.
	size := int64(0)
	if len(gz) >= 18 {
		size = min(int64(binary.LittleEndian.Uint32(gz[len(gz)-4:])), s.opts.MaxProfileBytes)
	}
	raw, err := readAll(make([]byte, 0, size+1), io.LimitReader(zr, s.opts.MaxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	if int64(len(raw)) > s.opts.MaxProfileBytes {
		return nil, fmt.Errorf("store: %s: decompresses to more than %d bytes", path, s.opts.MaxProfileBytes)
	}
	return raw, nil
}

// readAll appends what r reads to b until EOF, as io.ReadAll does, and
// grows b only when it is full.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.st
	st.PutErrors = maps.Clone(s.st.PutErrors)
	st.Windows = len(s.windows) - s.rollups - s.merged
	st.Rollups = s.rollups
	st.Merged = s.merged
	st.Bytes = s.bytes
	return st
}

// Close makes further calls fail with ErrClosed. Stored windows stay on
// disk for the next Open.
func (s *Store) Close() error {
	if s.cancel != nil {
		s.cancel()
		<-s.stopped
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// errCause names the cause of a Put error for Stats and logs.
func errCause(err error) string {
	var inv invalidError
	switch {
	case errors.As(err, &inv):
		return "invalid"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "disk_full"
	case errors.Is(err, syscall.EROFS):
		return "read_only"
	case errors.Is(err, fs.ErrPermission):
		return "permission"
	}
	return "io"
}

// logCause logs err at most once per cause every logEvery.
func (s *Store) logCause(cause string, err error) {
	now := time.Now()
	s.mu.Lock()
	last, seen := s.lastLog[cause]
	if seen && now.Sub(last) < logEvery {
		s.mu.Unlock()
		return
	}
	s.lastLog[cause] = now
	s.mu.Unlock()
	s.log.Warn("store: write failed; windows are not kept locally until this is fixed", "cause", cause, "err", err, "log_every", logEvery)
}

// gzipProfile serializes p like p.Write, but with gzip's fastest level,
// about a third cheaper than the default for 10% more bytes. It encodes
// into raw, then compresses into gz through zw; all three are reused.
func gzipProfile(p *profile.Profile, raw, gz *bytes.Buffer, zw *gzip.Writer) error {
	if err := p.WriteUncompressed(raw); err != nil {
		return err
	}
	zw.Reset(gz)
	zw.Write(raw.Bytes())
	return zw.Close()
}

// valueIndex picks the sample value that counts samples, as the viewer does.
func valueIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "samples" {
			return i
		}
	}
	for i, st := range p.SampleType {
		if st.Type == p.DefaultSampleType {
			return i
		}
	}
	return 0
}
