package process

import (
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Snapshots is the one reader of processes' memory maps: it keeps the
// latest read of each process's /proc/PID/maps (its executable mappings,
// all that its users look up), so that the symbolizer and
// the unwind-table worker, which both need a process's mappings soon after
// it starts and again when it maps something new, read the file once
// between changes rather than once each. A read is reused when it is as
// recent as the caller needs and holds the address the caller looks for;
// otherwise the file is read again and that read replaces the kept one.
//
// The maps of a process change without notice (mmap, dlopen, exec), so a
// kept read is only ever a hint of bounded age: every caller says how old a
// read it accepts, at most SnapshotAge. Reads are dropped once older than
// that, or by Forget when the process exits, and the cache holds at most
// maxSnapshots processes, dropping the oldest reads first. A Snapshots is
// safe for concurrent use.
type Snapshots struct {
	mu    sync.Mutex
	max   int
	by    map[string]*snapshot // by cleaned /proc directory
	swept time.Time            // when reads older than SnapshotAge were last dropped

	reads, reused atomic.Uint64
}

type snapshot struct {
	maps []Mapping // as read: nothing modifies it (callers get copies)
	err  error     // a *MapsError after the mappings before it, or nil
	at   time.Time // when the read began
}

const (
	// SnapshotAge is the age past which a read is never reused.
	SnapshotAge = 10 * time.Second
	// maxSnapshots bounds the processes whose maps a Snapshots keeps:
	// those read in the last SnapshotAge, usually far fewer.
	maxSnapshots = 4096
)

// NewSnapshots returns an empty cache.
func NewSnapshots() *Snapshots {
	return &Snapshots{max: maxSnapshots, by: map[string]*snapshot{}}
}

// Read returns the executable mappings of the process whose /proc
// directory is procDir, as ReadMaps gives them, from a read that began at or after since and
// (when need is not 0) has a mapping holding the address need: the kept
// read when it qualifies, else a new one. A caller that must see the maps
// as they are now passes time.Now(). The slice is the caller's to modify.
// Errors opening or reading the file (the process is gone) are returned
// and not kept; nor is a read with no executable mapping (an exited
// process not yet reaped): the kept read stays, for Last.
func (c *Snapshots) Read(procDir string, since time.Time, need uint64) ([]Mapping, error) {
	key := filepath.Clean(procDir)
	c.mu.Lock()
	s := c.by[key]
	c.mu.Unlock()
	if old := time.Now().Add(-SnapshotAge); since.Before(old) {
		since = old
	}
	if s != nil && !s.at.Before(since) && (need == 0 || holds(s.maps, need)) {
		c.reused.Add(1)
		return slices.Clone(s.maps), s.err
	}
	at := time.Now()
	c.reads.Add(1)
	ms, err := ReadMaps(key)
	if err != nil && len(ms) == 0 {
		if _, malformed := err.(*MapsError); !malformed {
			return nil, err
		}
	}
	ms = slices.DeleteFunc(ms, func(m Mapping) bool { return !m.Exec() })
	if len(ms) == 0 && err == nil {
		return nil, nil
	}
	c.mu.Lock()
	if at.Sub(c.swept) > SnapshotAge {
		c.dropOlderLocked(at.Add(-SnapshotAge))
		c.swept = at
	}
	if old := c.by[key]; old == nil || !old.at.After(at) {
		if old == nil && len(c.by) >= c.max {
			c.evictLocked()
		}
		c.by[key] = &snapshot{maps: ms, err: err, at: at}
	}
	c.mu.Unlock()
	return slices.Clone(ms), err
}

func holds(ms []Mapping, addr uint64) bool {
	for i := range ms {
		if ms[i].Start <= addr && addr < ms[i].End {
			return true
		}
	}
	return false
}

// dropOlderLocked drops the reads that began before t.
func (c *Snapshots) dropOlderLocked(t time.Time) {
	for k, s := range c.by {
		if s.at.Before(t) {
			delete(c.by, k)
		}
	}
}

// evictLocked makes room for one more read: it drops the oldest quarter
// of the reads.
func (c *Snapshots) evictLocked() {
	ats := make([]time.Time, 0, len(c.by))
	for _, s := range c.by {
		ats = append(ats, s.at)
	}
	slices.SortFunc(ats, time.Time.Compare)
	c.dropOlderLocked(ats[len(ats)/4].Add(1))
}

// Last returns the kept read of the process whose /proc directory is
// procDir whatever its age (reads are dropped SnapshotAge after they began,
// or by Forget), and when it began; ok is false when there is none. It is
// for naming the samples of a process that has exited: its maps can no
// longer be read, nor change, and the last read of them, perhaps one
// another user made, holds what it last ran in. The slice is the caller's
// to modify.
func (c *Snapshots) Last(procDir string) (maps []Mapping, at time.Time, ok bool) {
	c.mu.Lock()
	s := c.by[filepath.Clean(procDir)]
	c.mu.Unlock()
	if s == nil {
		return nil, time.Time{}, false
	}
	return slices.Clone(s.maps), s.at, true
}

// Forget drops the kept read of the process whose /proc directory is
// procDir (it exited).
func (c *Snapshots) Forget(procDir string) {
	key := filepath.Clean(procDir)
	c.mu.Lock()
	delete(c.by, key)
	c.mu.Unlock()
}

// SnapshotsStats are the counters of a Snapshots.
type SnapshotsStats struct {
	Processes int    // processes whose maps are kept
	Reads     uint64 // maps files read
	Reused    uint64 // reads answered from a kept read
}

// Stats returns the cache's counters.
func (c *Snapshots) Stats() SnapshotsStats {
	c.mu.Lock()
	n := len(c.by)
	c.mu.Unlock()
	return SnapshotsStats{Processes: n, Reads: c.reads.Load(), Reused: c.reused.Load()}
}
