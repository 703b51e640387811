package store

import "slices"

// A view of level k above 0 (WindowsAt, MergedAt) shows, of each target
// and period, the coarsest rollup up to level k; what that rollup merged
// (the windows and finer rollups of the period) is hidden. A day of a
// busy host is some 300,000 windows, nearly all of them hidden in any view
// above level 0: listing them to find the few no rollup holds (the last
// minutes, a target whose rollup failed) took most of the viewer's time
// on a day's range. So each entry keeps the finest level whose rollup of
// its target holds it (entry.hidden), kept up to date as rollups come and
// go, and the store keeps apart the entries a view above level 0 may show:
//
//   - exposed: the entries of level 0 that no 5-minute rollup hides;
//   - rollupList[j]: the rollups of level j.
//
// A view of level k reads those, and the windows that start just before
// its range (see levelEntriesLocked), never the hidden windows.

// rollupKey names a rollup: its level, the start of its period and its
// target's labels.
type rollupKey struct {
	level  int8
	start  int64
	labels *labelSet
}

func keyOf(e *entry) rollupKey { return rollupKey{e.level, e.start, e.labels} }

// isExposed reports whether e belongs in s.exposed.
func isExposed(e *entry) bool { return e.level == 0 && e.hidden != 1 }

// coverLocked returns the finest level above e's whose rollup of e's
// target holds the period e starts in (and is longer than e, so that it
// merged e), 0 if none: the rule of visible.
func (s *Store) coverLocked(e *entry) int8 {
	for j := int(e.level) + 1; j < len(levels); j++ {
		d := int64(levels[j])
		if e.dur < d && s.rollupAt[rollupKey{int8(j), e.start - e.start%d, e.labels}] != nil {
			return int8(j)
		}
	}
	return 0
}

// setHiddenLocked sets e.hidden, moving e in or out of s.exposed.
func (s *Store) setHiddenLocked(e *entry, h int8) {
	was := isExposed(e)
	e.hidden = h
	switch now := isExposed(e); {
	case was && !now:
		s.exposed = deleteSorted(s.exposed, e)
	case now && !was:
		s.exposed = insertSorted(s.exposed, e)
	}
}

// listLocked files e, just added to s.windows, in the lists of the views.
// While Open scans the directory, that waits for indexHiddenLocked.
func (s *Store) listLocked(e *entry) {
	if e.level > 0 {
		s.rollupAt[keyOf(e)] = e
	}
	if s.scanning {
		return
	}
	e.hidden = s.coverLocked(e)
	if isExposed(e) {
		s.exposed = insertSorted(s.exposed, e)
	}
	if e.level > 0 {
		s.rollupList[e.level] = insertSorted(s.rollupList[e.level], e)
		s.hideUnderLocked(e)
	}
}

// unlistLocked takes e, just removed from s.windows, out of the lists, and
// shows again what it hid. Prune does the same for many at once.
func (s *Store) unlistLocked(e *entry) {
	if s.scanning {
		return
	}
	if isExposed(e) {
		s.exposed = deleteSorted(s.exposed, e)
	}
	if e.level > 0 {
		s.rollupList[e.level] = deleteSorted(s.rollupList[e.level], e)
		s.unhideLocked(e)
	}
}

// forgetRollupLocked drops e from s.rollupAt (dropLocked).
func (s *Store) forgetRollupLocked(e *entry) {
	if k := keyOf(e); e.level > 0 && s.rollupAt[k] == e {
		delete(s.rollupAt, k)
	}
}

// candidatesLocked returns the entries of levels 1 to below that start in
// [from, to) and that a rollup of a level up to below leaves shown, and
// those of level 0 that no 5-minute rollup hides: those a rollup of level
// below starting at from may hide. With all0, every window of level 0 of
// the range instead of the exposed ones.
func (s *Store) candidatesLocked(from, to int64, below int, all0 bool) []*entry {
	var out []*entry
	pick := func(list []*entry, level int) {
		i, _ := slices.BinarySearchFunc(list, from, byStart)
		for _, e := range list[i:] {
			if e.start >= to {
				break
			}
			if int(e.level) == level {
				out = append(out, e)
			}
		}
	}
	if all0 {
		pick(s.windows, 0)
	} else {
		pick(s.exposed, 0)
	}
	for j := 1; j < below; j++ {
		pick(s.rollupList[j], j)
	}
	return out
}

// hideUnderLocked hides, behind rollup r, what it merged: the entries of
// its target and period at finer levels that no finer rollup hides.
func (s *Store) hideUnderLocked(r *entry) {
	d := int64(levels[r.level])
	for _, x := range s.candidatesLocked(r.start, r.start+d, int(r.level), false) {
		if x.labels == r.labels && x.dur < d && (x.hidden == 0 || x.hidden > r.level) {
			s.setHiddenLocked(x, r.level)
		}
	}
}

// unhideLocked shows again, or behind a coarser rollup, what rollup r,
// no longer indexed, hid. What a 5-minute rollup hides is in no list but
// s.windows.
func (s *Store) unhideLocked(r *entry) {
	d := int64(levels[r.level])
	for _, x := range s.candidatesLocked(r.start, r.start+d, int(r.level), r.level == 1) {
		if x.labels == r.labels && x.hidden == r.level {
			s.setHiddenLocked(x, s.coverLocked(x))
		}
	}
}

// indexHiddenLocked computes what every entry's view hides and builds the
// lists, once Open has scanned the directory.
func (s *Store) indexHiddenLocked() {
	s.scanning = false
	s.exposed = s.exposed[:0]
	for j := range s.rollupList {
		s.rollupList[j] = s.rollupList[j][:0]
	}
	for _, e := range s.windows {
		e.hidden = s.coverLocked(e)
		if isExposed(e) {
			s.exposed = append(s.exposed, e)
		}
		if e.level > 0 {
			s.rollupList[e.level] = append(s.rollupList[e.level], e)
		}
	}
}

// pruneListsLocked takes out of the lists the entries Prune dropped, those
// ordered before first (all of them if first is nil), and shows what the
// dropped rollups (dropped: of levels above 0 only) hid.
func (s *Store) pruneListsLocked(first *entry, dropped []*entry) {
	trim := func(list []*entry) []*entry {
		n := len(list)
		if first != nil {
			n, _ = slices.BinarySearchFunc(list, first, compareEntries)
		}
		return slices.Delete(list, 0, n)
	}
	s.exposed = trim(s.exposed)
	for j := range s.rollupList {
		s.rollupList[j] = trim(s.rollupList[j])
	}
	for _, r := range dropped {
		s.unhideLocked(r)
	}
}

// levelEntriesLocked returns the entries of levels up to k (k > 0) that
// overlap [f, t) and that no rollup of a level up to k hides, in the order
// of s.windows; and every window that starts before f and reaches into
// the range, hidden or not: the rollup that hides one may end before f,
// and then the view shows it. What visible would keep of the range's
// entries is all there.
func (s *Store) levelEntriesLocked(f, t int64, k int) []*entry {
	var in []*entry
	add := func(e *entry) {
		if overlaps(e, f) {
			in = append(in, e)
		}
	}
	i, _ := slices.BinarySearchFunc(s.windows, f-s.maxDur, byStart)
	for _, e := range s.windows[i:] {
		if e.start >= min(f, t) {
			break
		}
		if e.level == 0 {
			add(e)
		}
	}
	i, _ = slices.BinarySearchFunc(s.exposed, f, byStart)
	for _, e := range s.exposed[i:] {
		if e.start >= t {
			break
		}
		if e.hidden == 0 || int(e.hidden) > k {
			add(e)
		}
	}
	for j := 1; j <= k; j++ {
		list := s.rollupList[j]
		i, _ := slices.BinarySearchFunc(list, f-int64(levels[j]), byStart)
		for _, e := range list[i:] {
			if e.start >= t {
				break
			}
			if j == k || e.hidden == 0 || int(e.hidden) > k {
				add(e)
			}
		}
	}
	slices.SortFunc(in, compareEntries)
	return in
}

func insertSorted(list []*entry, e *entry) []*entry {
	i, _ := slices.BinarySearchFunc(list, e, compareEntries) // usually the end
	return slices.Insert(list, i, e)
}

func deleteSorted(list []*entry, e *entry) []*entry {
	if i, found := slices.BinarySearchFunc(list, e, compareEntries); found && list[i] == e {
		return slices.Delete(list, i, i+1)
	}
	return list
}
