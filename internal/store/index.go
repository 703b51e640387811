package store

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// indexVersion is the pack index format of windows as the agent writes
// them; rollupIndexVersion that of rollups (a level, see levels), so that
// an older agent, which reads only version 1, skips rollups (and keeps
// them) rather than adding them to the windows they merge.
const (
	indexVersion       = 1
	rollupIndexVersion = 2
	// mergedIndexVersion is that of a window (level 0) whose last target
	// merges the others (Store.PutWindowMerged): an older agent would
	// count its samples twice, so it skips (and keeps) such windows.
	mergedIndexVersion = 3
)

// Limits on index content: the data directory is outside input. PutWindow
// refuses windows whose index would exceed them.
const (
	maxIndexSize = 64 << 20
	maxTargets   = 1 << 16
	maxSeq       = 1 << 20
)

// File name extensions. An index is JSON but not named .json: a store of
// the per-target layout (before packs) takes every .json for a sidecar.
const (
	packExt    = ".pack"
	indexExt   = ".index"
	profileExt = ".pb.gz" // per-target layout
	sidecarExt = ".json"  // per-target layout
)

// packIndex is the content of a window's .index file: where each target's
// gzipped profile lies in the window's pack.
type packIndex struct {
	Version    int       `json:"version"`
	Start      time.Time `json:"start"`
	DurationNS int64     `json:"duration_ns"`
	// Level is 0 for the agent's windows, k for the rollups of
	// levels[k] (version 2 only).
	Level   int           `json:"level,omitempty"`
	Targets []indexTarget `json:"targets"`
}

// indexTarget is one target of a pack. Its profile is the Size bytes at
// Offset; targets lie back to back, in index order, from offset 0.
type indexTarget struct {
	ID      string            `json:"id"`
	Labels  map[string]string `json:"labels"`
	Samples int64             `json:"samples"`
	Offset  int64             `json:"offset"`
	Size    int64             `json:"size"`  // bytes of the gzipped profile
	CRC32   uint32            `json:"crc32"` // IEEE CRC-32 of those bytes
	// Values are the distinct values of the profile's sample labels the
	// viewer filters by (pid, comm; see sampleValues), so that it lists
	// and filters them without opening the profile. A label with more
	// than maxValues values is left out (listed with no values when
	// AllValues is set); indexes written before have none.
	Values map[string][]string `json:"values,omitempty"`
	// AllValues says a label Values does not name has no values in the
	// profile (see web.Window.ValuesComplete); indexes written before it
	// do not set it, and a label they leave out is unknown.
	AllValues bool `json:"all_values,omitempty"`
}

// packName is the base name (without extension) of the pack and index of
// the window starting at start. seq tells apart windows written with the
// same start (an agent restarted within an interval, or Put): a later seq
// is written later, and its targets replace those of the same ID in
// earlier ones.
func packName(start time.Time, seq int) string {
	return start.UTC().Format(idTimeLayout) + "-" + strconv.Itoa(seq)
}

// parsePackName checks the form of a pack's base name and returns its start
// and sequence number.
func parsePackName(name string) (time.Time, int, error) {
	ts, sq, ok := strings.Cut(name, "-")
	if !ok {
		return time.Time{}, 0, fmt.Errorf("malformed pack name %q", name)
	}
	seq, err := strconv.Atoi(sq)
	if err != nil || seq < 0 || seq > maxSeq || strconv.Itoa(seq) != sq {
		return time.Time{}, 0, fmt.Errorf("malformed sequence number in pack name %q", name)
	}
	t, err := time.Parse(idTimeLayout, ts)
	if err != nil || t.UTC().Format(idTimeLayout) != ts {
		return time.Time{}, 0, fmt.Errorf("malformed time in pack name %q", name)
	}
	return t, seq, nil
}

// parseIndex decodes and checks an index. name is the file name without
// extension. It returns the index and the size its pack must have.
func parseIndex(data []byte, name string) (*packIndex, int64, error) {
	if len(data) > maxIndexSize {
		return nil, 0, fmt.Errorf("index %s of %d bytes exceeds %d", name, len(data), maxIndexSize)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, 0, fmt.Errorf("index %s: %w", name, err)
	}
	if probe.Version < indexVersion || probe.Version > mergedIndexVersion {
		if probe.Version > mergedIndexVersion {
			return nil, 0, fmt.Errorf("index %s: %w %d", name, errFutureVersion, probe.Version)
		}
		return nil, 0, fmt.Errorf("index %s: version %d is invalid", name, probe.Version)
	}
	start, _, err := parsePackName(name)
	if err != nil {
		return nil, 0, err
	}
	var x packIndex
	if err := json.Unmarshal(data, &x); err != nil {
		return nil, 0, fmt.Errorf("index %s: %w", name, err)
	}
	switch {
	case !x.Start.Equal(start):
		return nil, 0, fmt.Errorf("index %s: start %v does not match its file name", name, x.Start)
	case (x.Level != 0) != (probe.Version == rollupIndexVersion) || x.Level < 0 || x.Level >= len(levels):
		return nil, 0, fmt.Errorf("index %s: level %d in an index of version %d", name, x.Level, probe.Version)
	case x.Level > 0 && (x.DurationNS != int64(levels[x.Level]) || start.UnixNano()%int64(levels[x.Level]) != 0):
		return nil, 0, fmt.Errorf("index %s: rollup of level %d is not one aligned %v", name, x.Level, levels[x.Level])
	case probe.Version == mergedIndexVersion && len(x.Targets) < 2:
		return nil, 0, fmt.Errorf("index %s: a merged window of %d targets", name, len(x.Targets))
	case x.DurationNS < 0:
		return nil, 0, fmt.Errorf("index %s: negative duration %d", name, x.DurationNS)
	case len(x.Targets) == 0:
		return nil, 0, fmt.Errorf("index %s: no targets", name)
	case len(x.Targets) > maxTargets:
		return nil, 0, fmt.Errorf("index %s: %d targets exceed %d", name, len(x.Targets), maxTargets)
	}
	x.Start = start
	seen := make(map[string]bool, len(x.Targets))
	var off int64
	for i := range x.Targets {
		t := &x.Targets[i]
		if err := checkLabels(t.Labels); err != nil {
			return nil, 0, fmt.Errorf("index %s: target %d: %w", name, i, err)
		}
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		switch {
		case t.ID != levelID(start, t.Labels, x.Level):
			return nil, 0, fmt.Errorf("index %s: target %d: ID %q is not that of its start and labels", name, i, t.ID)
		case seen[t.ID]:
			return nil, 0, fmt.Errorf("index %s: target %d: ID %q listed twice", name, i, t.ID)
		case t.Samples < 0:
			return nil, 0, fmt.Errorf("index %s: target %d: negative sample count %d", name, i, t.Samples)
		case t.Size <= 0:
			return nil, 0, fmt.Errorf("index %s: target %d: profile size %d", name, i, t.Size)
		case t.Offset != off:
			return nil, 0, fmt.Errorf("index %s: target %d: offset %d, want %d (targets lie back to back)", name, i, t.Offset, off)
		case t.Size > math.MaxInt64-off:
			return nil, 0, fmt.Errorf("index %s: target %d: size %d at offset %d overflows", name, i, t.Size, off)
		}
		if _, marked := t.Labels[allTargetsLabel]; marked && probe.Version == indexVersion ||
			probe.Version == mergedIndexVersion && marked != (i == len(x.Targets)-1) {
			return nil, 0, fmt.Errorf("index %s: target %d: label %s misplaced in an index of version %d", name, i, allTargetsLabel, probe.Version)
		}
		seen[t.ID] = true
		off += t.Size
	}
	return &x, off, nil
}

// checkLabels checks a label set against the limits.
func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return fmt.Errorf("%d labels exceed %d", len(labels), maxLabels)
	}
	n := 0
	for k, v := range labels {
		n += len(k) + len(v)
	}
	if n > maxLabelBytes {
		return fmt.Errorf("labels of %d bytes exceed %d", n, maxLabelBytes)
	}
	return nil
}
