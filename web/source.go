package web

// API CONTRACT (shared with internal/store and cmd/scorch). Keep these
// signatures; add fields freely.

import (
	"context"
	"time"

	"github.com/google/pprof/profile"
)

// Window describes one stored profile: one target (service plus labels) over
// one aligned time window.
type Window struct {
	ID       string            // opaque, stable key for Open
	Start    time.Time         // window start (profile TimeNanos)
	Duration time.Duration     // window length (profile DurationNanos)
	Labels   map[string]string // service_name, container_id, ...; read-only (shared between windows)
	Samples  int64             // total sample count in the window
	Bytes    int64             // size of the stored profile (compressed), 0 unknown
	// Values, when the source knows them, are the distinct values of the
	// profile's sample labels (pid, comm), so that the viewer lists and
	// filters them without opening the profile; a label left out, or
	// listed with no values, is unknown (see ValuesComplete). Read-only.
	Values map[string][]string
	// ValuesComplete says that a sample label Values leaves out has no
	// values in the window (a label with too many is listed with none),
	// so that the viewer need not open the profile to learn it.
	ValuesComplete bool
}

// valuesOf returns the values of sample label key in w, and whether they
// are known without opening the profile.
func (w *Window) valuesOf(key string) (vals []string, known bool) {
	vals, listed := w.Values[key]
	return vals, len(vals) > 0 || !listed && w.ValuesComplete
}

// Source is what the viewer reads profiles from: the agent's local store, or
// a single pprof file for `scorch view`.
type Source interface {
	// Windows lists the windows that overlap [from, to), oldest first.
	Windows(ctx context.Context, from, to time.Time) ([]Window, error)
	// Open loads one window's profile. The viewer validates it, never
	// modifies it, and may keep it in its cache after Open returns, so
	// the Source must not change it either.
	Open(ctx context.Context, id string) (*profile.Profile, error)
}

// An EncodedSource can also hand over a window's profile as it is stored:
// pprof's protobuf encoding, not compressed. The viewer then decodes it
// straight into its own form (stacks of frame indexes, one value, shared
// label sets) instead of a profile.Profile, whose label maps per sample
// make a rollup of an hour of all targets take ten times the memory. It
// validates what it decodes as CheckValid does.
type EncodedSource interface {
	Source
	// OpenEncoded returns window id's profile, encoded. The viewer does
	// not keep or modify the slice.
	OpenEncoded(ctx context.Context, id string) ([]byte, error)
}

// A LeveledSource also keeps rollups: coarser windows that each merge one
// target's windows of a longer period (internal/store builds them in the
// background). A selection that covers more windows than the viewer opens
// at once (Options.MaxWindows) is answered from the finest level that
// fits, its range widened to that level's periods, rather than refused.
type LeveledSource interface {
	Source
	// Levels returns the period of each coarser level, finest first.
	Levels() []time.Duration
	// WindowsAt lists what level k (1 to len(Levels())) shows of [from,
	// to), oldest first: its rollups, and for the targets and periods
	// that have none, the finer windows. Level 0 is Windows.
	WindowsAt(ctx context.Context, from, to time.Time, k int) ([]Window, error)
	// MergedAt is WindowsAt where one profile of all targets stands for
	// every target of a period (a rollup) or of a window, where the
	// source has one: the targets' own labels are sample labels in it.
	// The viewer uses it for flame graphs and tables without filters,
	// from level 0 (windows only) up.
	MergedAt(ctx context.Context, from, to time.Time, k int) ([]Window, error)
}

// A FilteringSource lists only the windows a filter keeps, without
// making a Window of the others: a day of a busy host is some 300,000
// windows at level 0, of which a filter by process may keep a few
// hundred, and the list of them all was the viewer's largest allocation.
type FilteringSource interface {
	LeveledSource
	// WindowsWhere is WindowsAt, or MergedAt if merged (Windows at level
	// 0 unless merged), less the windows keep returns false for. keep
	// must not keep w or its maps.
	WindowsWhere(ctx context.Context, from, to time.Time, k int, merged bool, keep func(w *Window) bool) ([]Window, error)
}
