package store

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/web"
)

// slowLevelEntries is what windowsAt read before the views' lists: every
// entry of levels up to k that overlaps [f, t), walked from s.windows.
func slowLevelEntries(s *Store, f, t int64, k int) []*entry {
	lo := f - max(s.maxDur, int64(levels[k]))
	i, _ := slices.BinarySearchFunc(s.windows, lo, byStart)
	var in []*entry
	for _, e := range s.windows[i:] {
		if e.start >= t {
			break
		}
		if overlaps(e, f) && int(e.level) <= k {
			in = append(in, e)
		}
	}
	return in
}

func entryIDs(es []*entry) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.id
	}
	return ids
}

// checkTiers checks the views' lists against s.windows, and what every
// view of level above 0 shows of ranges against the walk of every entry.
func checkTiers(t *testing.T, what string, s *Store, rnd *rand.Rand) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var exposed []*entry
	var lists [len(levels)][]*entry
	rollups := 0
	for _, e := range s.windows {
		if h := s.coverLocked(e); e.hidden != h {
			t.Fatalf("%s: %s: hidden %d, want %d", what, e.id, e.hidden, h)
		}
		if isExposed(e) {
			exposed = append(exposed, e)
		}
		if e.level > 0 {
			lists[e.level] = append(lists[e.level], e)
			rollups++
			if s.rollupAt[keyOf(e)] != e {
				t.Fatalf("%s: rollup %s not indexed", what, e.id)
			}
		}
	}
	same := slices.Equal(s.exposed, exposed) && len(s.rollupAt) == rollups
	for j := range lists {
		same = same && slices.Equal(s.rollupList[j], lists[j])
	}
	if !same {
		t.Fatalf("%s: lists out of step: exposed %d want %d; rollups indexed %d want %d", what, len(s.exposed), len(exposed), len(s.rollupAt), rollups)
	}
	if len(s.windows) == 0 {
		return
	}
	first, last := s.windows[0].start, s.windows[len(s.windows)-1].start+int64(time.Hour)
	ranges := [][2]int64{{first - int64(time.Hour), last}}
	for range 40 {
		f := first + rnd.Int64N(last-first)
		ranges = append(ranges, [2]int64{f, f + rnd.Int64N(int64(3*time.Hour))})
	}
	for _, r := range ranges {
		for k := 1; k < len(levels); k++ {
			fast, slow := s.levelEntriesLocked(r[0], r[1], k), slowLevelEntries(s, r[0], r[1], k)
			for _, view := range []func([]*entry, int) []*entry{visible, visibleMerged} {
				if a, b := entryIDs(view(fast, k)), entryIDs(view(slow, k)); !slices.Equal(a, b) {
					t.Fatalf("%s: level %d, [%v, %v): lists\n%v\nwant\n%v", what, k, time.Unix(0, r[0]).UTC(), time.Unix(0, r[1]).UTC(), a, b)
				}
			}
		}
	}
}

// checkWhere checks WindowsWhere against the lists it filters.
func checkWhere(t *testing.T, what string, s *Store) {
	t.Helper()
	ctx := context.Background()
	from, to := time.Unix(0, 0), time.Now()
	keep := func(w *web.Window) bool { return w.Labels["service_name"] == "a" || w.Samples%2 == 1 }
	for k := range levels {
		for _, merged := range []bool{false, true} {
			var all []web.Window
			var err error
			switch {
			case merged:
				all, err = s.MergedAt(ctx, from, to, k)
			case k == 0:
				all, err = s.Windows(ctx, from, to)
			default:
				all, err = s.WindowsAt(ctx, from, to, k)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := slices.DeleteFunc(all, func(w web.Window) bool { return !keep(&w) })
			got, err := s.WindowsWhere(ctx, from, to, k, merged, keep)
			if err != nil {
				t.Fatal(err)
			}
			ids := func(ws []web.Window) (out []string) {
				for _, w := range ws {
					out = append(out, w.ID)
				}
				return out
			}
			if len(want) == 0 || !slices.Equal(ids(got), ids(want)) {
				t.Fatalf("%s: level %d, merged %v: WindowsWhere listed %d windows, want %d", what, k, merged, len(got), len(want))
			}
		}
	}
}

// TestViewListsMatchWalk keeps the views' lists (tiers.go) through what
// changes a store: windows written off the periods' boundaries, merged
// or not, rewritten with a later sequence, rollups built in passes,
// some failing, a reopen, and retention by age and by size; after each,
// what every view lists is what the walk of every entry gave.
func TestViewListsMatchWalk(t *testing.T) {
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	now := h0
	s := open(t, dir, Options{MaxAge: 10000 * 24 * time.Hour, NoRollups: true})
	s.now = func() time.Time { return now }
	// 7 s off the boundaries of the periods: a window of 15 s in four
	// crosses into the next minute, one in twenty into the next period.
	base := h0.Add(7 * time.Second)
	put := func(i int) {
		start := base.Add(time.Duration(i) * 15 * time.Second)
		items := []Item{
			{Labels: map[string]string{"service_name": "a", "host": "h"}, Profile: pidProfile("fa", 2+int64(i%5), start)},
			{Labels: map[string]string{"service_name": "b", "host": "h"}, Profile: pidProfile("fb", 3, start)},
		}
		if i%9 != 4 {
			items = append(items, Item{Labels: map[string]string{"service_name": "c", "host": "h"}, Profile: pidProfile("fc", 1, start)})
		}
		var err error
		if i%3 == 0 {
			err = s.PutWindow(start, 15*time.Second, items)
		} else {
			err = s.PutWindowMerged(start, 15*time.Second, items, mergedOf(t, items))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	compact := func() {
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	// Two and a half hours, compacted every 20 minutes.
	for ; i < 600; i++ {
		put(i)
		now = base.Add(time.Duration(i+1) * 15 * time.Second)
		if i%80 == 79 {
			compact()
			checkTiers(t, "compacted at "+now.Format(time.TimeOnly), s, rnd)
		}
	}
	// Windows rewritten into periods already rolled up: later sequences
	// replace targets under the rollups.
	for _, j := range []int{10, 11, 250, 251, 252, 599} {
		start := base.Add(time.Duration(j) * 15 * time.Second)
		if err := s.Put(start, 15*time.Second, map[string]string{"service_name": "b", "host": "h"}, pidProfile("fb", 5, start)); err != nil {
			t.Fatal(err)
		}
	}
	checkTiers(t, "rewritten", s, rnd)
	// A window no rollup can read: its period's rollup of that target
	// fails, and its windows stay shown above.
	for ; i < 640; i++ {
		put(i)
	}
	s.mu.RLock()
	var bad *entry
	for _, e := range s.windows {
		if e.level == 0 && !e.all && e.start > base.Add(615*15*time.Second).UnixNano() {
			bad = e
			break
		}
	}
	s.mu.RUnlock()
	if err := os.Truncate(filepath.Join(dir, bad.files.hour, bad.files.data), 0); err != nil {
		t.Fatal(err)
	}
	now = base.Add(3 * time.Hour)
	s.Compact(ctx) // fails on the truncated pack, builds the rest
	checkTiers(t, "a rollup failed", s, rnd)
	// The day's rollups, after a reopen.
	for ; i < 5760+40; i += 37 {
		put(i)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	now = base.Add(50 * time.Hour)
	s = open(t, dir, Options{MaxAge: 10000 * 24 * time.Hour, NoRollups: true})
	s.now = func() time.Time { return now }
	checkTiers(t, "reopened", s, rnd)
	compact()
	checkTiers(t, "days rolled up", s, rnd)
	checkWhere(t, "days rolled up", s)
	// Retention: by age from the front, then by size, which cuts into
	// periods whose rollups go first.
	s.opts.MaxAge = 29 * time.Hour
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	checkTiers(t, "pruned by age", s, rnd)
	for range 4 {
		s.opts.MaxBytes = s.Stats().Bytes * 7 / 10
		if err := s.Prune(); err != nil {
			t.Fatal(err)
		}
		checkTiers(t, "pruned by size", s, rnd)
	}
}
