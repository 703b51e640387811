package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/web"
)

// levels are the durations of the rollups, finest first; level 0 is the
// agent's own windows. A rollup of level k merges, for one target, the
// windows (or rollups of a finer level) that start in one period of
// levels[k], aligned to the Unix epoch (so days are UTC days). Each level
// divides the next, so a finer rollup lies within one coarser period.
var levels = [...]time.Duration{0, 5 * time.Minute, time.Hour, 24 * time.Hour}

// levelNames end the IDs of rollups.
var levelNames = [...]string{"", "5m", "1h", "1d"}

// Levels returns the durations of the rollup levels, finest first:
// WindowsAt(ctx, from, to, k) lists the rollups of Levels()[k-1].
func (s *Store) Levels() []time.Duration { return slices.Clone(levels[1:]) }

// rollupGrace is how long after a period ends, beyond twice the longest
// window, its rollup waits for windows still being written.
const rollupGrace = 30 * time.Second

// maxRollupsPerPass bounds the periods one pass of the compactor merges
// before it looks at Close again.
const maxRollupsPerPass = 64

// compactor builds rollups in the background until Close: after Open and
// after each PutWindow.
func (s *Store) compactor(ctx context.Context) {
	defer close(s.stopped)
	tick := time.NewTicker(time.Minute) // periods also end while nothing is written
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		case <-tick.C:
		}
		built := 0
		for {
			n, err := s.compact(ctx, maxRollupsPerPass)
			built += n
			if err != nil && ctx.Err() == nil {
				s.logCause("rollup_"+errCause(err), err)
			}
			if n < maxRollupsPerPass || err != nil || ctx.Err() != nil {
				break
			}
		}
		if built > 0 {
			// A rollup decodes and merges every window of its period:
			// tens of megabytes of garbage at once, every five minutes,
			// which Go's scavenger would hand back to the OS only over
			// minutes (the agent's RSS stood 100 MB above its steady
			// state after each). Handed back now.
			debug.FreeOSMemory()
		}
	}
}

// Compact builds the rollups of every period that has ended (see levels),
// finest level first, and returns the first error. The background
// compactor does the same unless Options.NoRollups is set.
func (s *Store) Compact(ctx context.Context) error {
	for {
		n, err := s.compact(ctx, maxRollupsPerPass)
		if err != nil || n < maxRollupsPerPass {
			return err
		}
	}
}

// compact builds the rollups of at most max periods and returns how many
// it built.
func (s *Store) compact(ctx context.Context, max int) (int, error) {
	s.cmu.Lock() // one compaction at a time
	defer s.cmu.Unlock()
	n := 0
	for k := 1; k < len(levels); k++ {
		periods, next := s.periods(k)
		for _, p := range periods {
			if n == max {
				return n, nil
			}
			if err := ctx.Err(); err != nil {
				return n, err
			}
			if err := s.rollup(ctx, k, p); err != nil {
				return n, err
			}
			n++
		}
		s.compacted[k] = next
	}
	return n, nil
}

// periods returns the starts of the periods of level k that have ended,
// hold windows a rollup of level k would merge, and have no rollup of
// level k yet, oldest first; and where the next search may start once
// they are done. s.cmu is held.
func (s *Store) periods(k int) ([]int64, int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d := int64(levels[k])
	ended := s.now().Add(-rollupGrace).UnixNano() - 2*s.maxDur
	done := map[int64]bool{}
	var out []int64
	i, _ := slices.BinarySearchFunc(s.windows, s.compacted[k], byStart)
	for _, e := range s.windows[i:] {
		p := e.start - e.start%d
		switch {
		case p+d > ended:
		case int(e.level) == k:
			done[p] = true
		case int(e.level) < k && e.dur < d && (len(out) == 0 || out[len(out)-1] != p):
			out = append(out, p)
		}
	}
	out = slices.DeleteFunc(out, func(p int64) bool { return done[p] })
	slices.Sort(out)
	out = slices.Compact(out)
	// Periods that fail are not tried again until the store is reopened.
	return out, max(s.compacted[k], ended-ended%d)
}

// rollup merges, per target, what level k-1 shows of the period of level
// k starting at p into one profile, and writes them as one rollup pack.
// A target whose windows cannot be read or merged is counted and left
// out; its windows stay visible at level k (see visible).
func (s *Store) rollup(ctx context.Context, k int, p int64) error {
	d := int64(levels[k])
	s.mu.RLock()
	var in []*entry
	i, _ := slices.BinarySearchFunc(s.windows, p, byStart)
	for _, e := range s.windows[i:] {
		if e.start >= p+d {
			break
		}
		if int(e.level) < k && e.dur < d {
			in = append(in, e)
		}
	}
	in = visible(in, k-1)
	groups := map[*labelSet][]*entry{}
	var order []*labelSet
	for _, e := range in {
		if groups[e.labels] == nil {
			order = append(order, e.labels)
		}
		groups[e.labels] = append(groups[e.labels], e)
	}
	s.mu.RUnlock()

	var items []Item
	failed := 0
	for _, ls := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		merged, err := s.merge(groups[ls], p, d)
		if err != nil {
			failed++
			s.logCause("rollup_merge", fmt.Errorf("store: rollup of %v at %v: %w", ls.m, time.Unix(0, p).UTC(), err))
			continue
		}
		items = append(items, Item{Labels: maps.Clone(ls.m), Profile: merged})
	}
	s.mu.Lock()
	s.st.RollupErrors += uint64(failed)
	s.mu.Unlock()
	if len(items) == 0 {
		return nil
	}
	withAll := false
	if failed == 0 && len(items) > 1 {
		// Only when every target is in it: it hides them all.
		all, err := mergeTargets(items, p, d)
		if err != nil {
			s.mu.Lock()
			s.st.RollupErrors++
			s.mu.Unlock()
			s.logCause("rollup_merge", fmt.Errorf("store: rollup of all targets at %v: %w", time.Unix(0, p).UTC(), err))
		} else {
			items, withAll = append(items, all), true
		}
	}
	err := s.putWindow(k, time.Unix(0, p), levels[k], items, withAll)
	if err != nil {
		s.mu.Lock()
		s.st.RollupErrors += uint64(len(items))
		s.mu.Unlock()
	}
	return err
}

// maxRollupPids is how many processes a target's rollup of a period
// keeps apart by their pid label: those with the most samples. The
// samples of the others keep their stacks and comm but lose the pid, so
// that they merge: on a host starting 100 processes a second, a rollup
// that kept every pid would hold as many samples as the windows it
// merges, and an hour or a day of them could not be read in a second
// (bench/RESULTS.md, churn).
const maxRollupPids = 128

// merge reads the profiles of es and merges them into one that starts at
// p and lasts d. Thread ids are dropped: a rollup keeps the samples of
// each process, not of each thread (the viewer does not filter by
// thread), so that it does not grow with every thread a host ran; and
// the pids of all but maxRollupPids processes (see there).
func (s *Store) merge(es []*entry, p, d int64) (*profile.Profile, error) {
	ps := make([]*profile.Profile, len(es))
	for i, e := range es {
		pr, err := s.read(e)
		if err != nil {
			return nil, err
		}
		ps[i] = pr
	}
	capPids(ps, maxRollupPids)
	m, err := mergeBatched(len(ps), func(i int) (*profile.Profile, error) {
		pr := ps[i]
		ps[i] = nil // merged: garbage once its batch is
		return pr, nil
	})
	if err != nil {
		return nil, err
	}
	m.TimeNanos, m.DurationNanos = p, d
	return m, nil
}

// capPids drops the thread ids of the samples of ps, and the pids of all
// but the max processes with the most samples in them (ties: the lower
// pid).
func capPids(ps []*profile.Profile, max int) {
	perPid := map[int64]int64{}
	for _, pr := range ps {
		vi := valueIndex(pr)
		for _, smp := range pr.Sample {
			delete(smp.NumLabel, "tid")
			delete(smp.NumUnit, "tid")
			if pid := smp.NumLabel["pid"]; len(pid) == 1 && vi < len(smp.Value) {
				perPid[pid[0]] += smp.Value[vi]
			}
		}
	}
	if len(perPid) <= max {
		return
	}
	pids := slices.Collect(maps.Keys(perPid))
	slices.SortFunc(pids, func(a, b int64) int {
		if c := cmp.Compare(perPid[b], perPid[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	keep := make(map[int64]bool, max)
	for _, pid := range pids[:max] {
		keep[pid] = true
	}
	for _, pr := range ps {
		for _, smp := range pr.Sample {
			if pid := smp.NumLabel["pid"]; len(pid) != 1 || !keep[pid[0]] {
				delete(smp.NumLabel, "pid")
				delete(smp.NumUnit, "pid")
			}
		}
	}
}

// mergeBatch is how many profiles mergeBatched holds besides what it has
// merged so far.
const mergeBatch = 8

// mergeBatched merges the n profiles get returns, mergeBatch at a time
// into what is merged so far, so that at most that many are in memory at
// once: a period's rollup of all targets on a host starting processes all
// the time held every target's profile, a copy of each and their merge at
// once, and pushed the agent's RSS up by 100 to 180 MB at each one
// (bench/RESULTS.md, churn). get is called once per profile, in order.
func mergeBatched(n int, get func(i int) (*profile.Profile, error)) (*profile.Profile, error) {
	var acc *profile.Profile
	for i := 0; i < n; i += mergeBatch {
		ps := make([]*profile.Profile, 0, mergeBatch+1)
		if acc != nil {
			ps = append(ps, acc)
		}
		for j := i; j < min(i+mergeBatch, n); j++ {
			pr, err := get(j)
			if err != nil {
				return nil, err
			}
			ps = append(ps, pr)
		}
		m, err := profile.Merge(ps)
		if err != nil {
			return nil, err
		}
		acc = m
	}
	if acc == nil {
		return nil, errors.New("store: no profile to merge")
	}
	return acc, nil
}

// visible returns the entries of es (rollups of level k and below) that
// a view at level k shows: an entry is hidden when a rollup of a coarser
// level up to k, of its target, holds the period it starts in (and it is
// shorter than that level's periods, so that the rollup merged it).
func visible(es []*entry, k int) []*entry {
	es = slices.DeleteFunc(slices.Clone(es), func(e *entry) bool { return e.all })
	if k == 0 {
		return slices.DeleteFunc(es, func(e *entry) bool { return e.level > 0 })
	}
	type key struct {
		level  int
		period int64
		labels *labelSet
	}
	covered := map[key]bool{}
	for _, e := range es {
		if e.level > 0 && int(e.level) <= k {
			covered[key{int(e.level), e.start, e.labels}] = true
		}
	}
	var out []*entry
	for _, e := range es {
		if int(e.level) > k {
			continue
		}
		hidden := false
		for j := int(e.level) + 1; j <= k && !hidden; j++ {
			d := int64(levels[j])
			hidden = e.dur < d && covered[key{j, e.start - e.start%d, e.labels}]
		}
		if !hidden {
			out = append(out, e)
		}
	}
	return out
}

// WindowsAt lists what the view at level k shows of [from, to), oldest
// first: the rollups of levels[k] (see Levels), and for the targets and
// periods that have none, the rollups of the finest levels or the windows
// that do. Level 0 is Windows. Rollups widen the range to their periods.
func (s *Store) WindowsAt(ctx context.Context, from, to time.Time, k int) ([]web.Window, error) {
	if k <= 0 {
		return s.Windows(ctx, from, to)
	}
	if k >= len(levels) {
		return nil, fmt.Errorf("store: no level %d (there are %d)", k, len(levels)-1)
	}
	return s.windowsAt(ctx, from, to, k, visible, nil)
}

// MergedAt is WindowsAt where a rollup of all targets holds a period, or
// a window's merge of all targets holds that window (PutWindowMerged):
// it alone stands for every target there (see visibleMerged). Level 0
// lists windows only.
func (s *Store) MergedAt(ctx context.Context, from, to time.Time, k int) ([]web.Window, error) {
	return s.WindowsWhere(ctx, from, to, k, true, nil)
}

// The store is what the agent's viewer reads.
var _ web.FilteringSource = (*Store)(nil)

// WindowsWhere is WindowsAt, or MergedAt if merged (Windows at level 0
// unless merged), less the windows keep returns false for; the others are
// never made into a web.Window beyond the one keep is shown.
func (s *Store) WindowsWhere(ctx context.Context, from, to time.Time, k int, merged bool, keep func(*web.Window) bool) ([]web.Window, error) {
	if k < 0 || k >= len(levels) {
		return nil, fmt.Errorf("store: no level %d of rollups (there are %d)", k, len(levels)-1)
	}
	switch {
	case merged:
		return s.windowsAt(ctx, from, to, k, visibleMerged, keep)
	case k == 0:
		return s.windowsAt(ctx, from, to, 0, nil, keep)
	}
	return s.windowsAt(ctx, from, to, k, visible, keep)
}

// windowsAt lists the entries of levels up to k that overlap [from, to),
// as view shows them (none: level 0 only, as written), those keep
// returns true for (nil: all).
func (s *Store) windowsAt(ctx context.Context, from, to time.Time, k int, view func([]*entry, int) []*entry, keep func(*web.Window) bool) ([]web.Window, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	f, t := from.UnixNano(), to.UnixNano()
	var in []*entry
	if k > 0 {
		in = s.levelEntriesLocked(f, t, k)
	} else {
		i, _ := slices.BinarySearchFunc(s.windows, f-s.maxDur, byStart)
		for _, e := range s.windows[i:] {
			if e.start >= t {
				break
			}
			if overlaps(e, f) && e.level == 0 && (view != nil || !e.all) {
				in = append(in, e)
			}
		}
	}
	if view != nil {
		in = view(in, k)
	}
	var out []web.Window
	if keep == nil {
		out = make([]web.Window, 0, len(in))
	}
	for _, e := range in {
		if w := webWindow(e); keep == nil || keep(&w) {
			out = append(out, w)
		}
	}
	return out, nil
}

// overlaps reports whether e, which starts before the end of a range,
// reaches past its start f (a window of no duration: starts at f or
// after).
func overlaps(e *entry, f int64) bool {
	if e.dur == 0 {
		return e.start >= f
	}
	return e.start+e.dur > f
}

// visibleMerged is visible, except that the coarsest rollup of all
// targets (up to level k) of a period stands for every target's entries
// there, which it merged: unless one target shows a coarser rollup that
// covers the period (its own merge succeeded where that of all targets,
// at the coarser level, did not). Where none does, a window's merge of
// all targets stands for the windows of its pack, if they are all still
// there (none was replaced by a later pack of the same start).
func visibleMerged(es []*entry, k int) []*entry {
	type key struct {
		level  int
		period int64
	}
	vis := visible(es, k)
	shown := map[key]bool{} // levels and starts of the targets' rollups shown
	for _, e := range vis {
		if e.level > 0 {
			shown[key{int(e.level), e.start}] = true
		}
	}
	var alls []*entry
	for _, e := range es {
		if e.all && (e.level > 0 || e.files.refs == int(e.covers)+1) {
			alls = append(alls, e)
		}
	}
	slices.SortFunc(alls, func(a, b *entry) int { return int(b.level) - int(a.level) })
	used := map[key]bool{}
	usedPacks := map[*files]bool{} // of the windows' merges used
	coveredBy := func(e *entry, from int) bool {
		if e.level == 0 && !e.all && usedPacks[e.files] {
			return true
		}
		for j := max(from, 1); j <= k; j++ {
			d := int64(levels[j])
			if used[key{j, e.start - e.start%d}] && (e.dur < d || int(e.level) == j) {
				return true
			}
		}
		return false
	}
	blocked := func(a *entry) bool {
		for j := int(a.level) + 1; j <= k; j++ {
			d := int64(levels[j])
			if shown[key{j, a.start - a.start%d}] {
				return true
			}
		}
		return false
	}
	var out []*entry
	for _, a := range alls {
		if !coveredBy(a, int(a.level)+1) && !blocked(a) {
			if a.level == 0 {
				usedPacks[a.files] = true
			} else {
				used[key{int(a.level), a.start}] = true
			}
			out = append(out, a)
		}
	}
	for _, e := range vis {
		if !coveredBy(e, int(e.level)) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

// allTargetsLabel marks the rollup of all targets of a period: its window
// labels are those all targets share, plus this one; the others are
// sample labels.
const allTargetsLabel = "scorch_rollup"

// mergeTargets merges the rollups of the targets of a period into one,
// each target's own labels (those not shared by all) added to its samples.
func mergeTargets(items []Item, p, d int64) (Item, error) {
	common := commonLabels(items)
	m, err := mergeBatched(len(items), func(i int) (*profile.Profile, error) {
		it := items[i]
		c := it.Profile.Copy()
		for _, smp := range c.Sample {
			for k, v := range it.Labels {
				if _, ok := common[k]; ok {
					continue
				}
				if smp.Label == nil {
					smp.Label = map[string][]string{}
				}
				smp.Label[k] = []string{v}
			}
		}
		return c, nil
	})
	if err != nil {
		return Item{}, err
	}
	m.TimeNanos, m.DurationNanos = p, d
	common[allTargetsLabel] = "all targets"
	return Item{Labels: common, Profile: m}, nil
}

// webWindow is what the viewer sees of an entry. The mark of an all-targets
// rollup stays in the store (entry.all says it): the viewer would show it
// as a label, and copy it into the samples of a downloaded profile. The
// labels are the shared, read-only map of the entry's label set: a listing
// of a day's windows allocates no map per window.
func webWindow(e *entry) web.Window {
	return web.Window{
		ID:       e.id,
		Start:    time.Unix(0, e.start),
		Duration: time.Duration(e.dur),
		Labels:   e.labels.view,
		Samples:  e.samples,
		Bytes:    e.pbSize,
		Values:   e.values.get(),
		// Written with AllValues: a label it leaves out has none.
		ValuesComplete: e.allVals,
	}
}
