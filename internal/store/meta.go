package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// metaVersion is the sidecar format of the per-target layout, which this
// package reads.
const metaVersion = 1

// Limits on sidecar content: the data directory is outside input.
const (
	maxMetaSize   = 1 << 20
	maxLabels     = 256
	maxLabelBytes = 64 << 10
)

// meta is the content of a window's .json sidecar, in the per-target
// layout written before packs (read, no longer written).
type meta struct {
	Version    int               `json:"version"`
	ID         string            `json:"id"`
	Start      time.Time         `json:"start"`
	DurationNS int64             `json:"duration_ns"`
	Labels     map[string]string `json:"labels"`
	Samples    int64             `json:"samples"`
	Size       int64             `json:"size"`  // bytes of the .pb.gz
	CRC32      uint32            `json:"crc32"` // IEEE CRC-32 of the .pb.gz
}

// errFutureVersion marks a sidecar or index written by a newer format.
var errFutureVersion = errors.New("unknown format version")

// idTimeLayout formats a window start in its ID; it sorts lexically by time.
const idTimeLayout = "20060102T150405.000000000Z"

// hourLayout names the directory of an hour.
const hourLayout = "20060102T15"

// windowID returns the ID of the window of labels starting at start.
func windowID(start time.Time, labels map[string]string) string {
	h := fnv.New64a()
	h.Write([]byte(labelKey(labels)))
	return fmt.Sprintf("%s-%016x", start.UTC().Format(idTimeLayout), h.Sum64())
}

// levelID returns the ID of a window of level 0 (windowID) or of a rollup
// of levels[level].
func levelID(start time.Time, labels map[string]string, level int) string {
	id := windowID(start, labels)
	if level > 0 {
		id += "-" + levelNames[level]
	}
	return id
}

// labelKey is a canonical encoding of a label set.
func labelKey(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// parseID checks the form of an ID and returns its start time.
func parseID(id string) (time.Time, error) {
	ts, hash, ok := strings.Cut(id, "-")
	if !ok || len(hash) != 16 || strings.Trim(hash, "0123456789abcdef") != "" {
		return time.Time{}, fmt.Errorf("malformed window ID %q", id)
	}
	t, err := time.Parse(idTimeLayout, ts)
	if err != nil || t.UTC().Format(idTimeLayout) != ts {
		return time.Time{}, fmt.Errorf("malformed time in window ID %q", id)
	}
	return t, nil
}

// parseMeta decodes and checks a sidecar. name is the file name without
// extension, which must be the ID.
func parseMeta(data []byte, name string) (*meta, error) {
	if len(data) > maxMetaSize {
		return nil, fmt.Errorf("sidecar of %d bytes exceeds %d", len(data), maxMetaSize)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	if probe.Version != metaVersion {
		if probe.Version > metaVersion {
			return nil, fmt.Errorf("sidecar: %w %d", errFutureVersion, probe.Version)
		}
		return nil, fmt.Errorf("sidecar version %d is invalid", probe.Version)
	}
	var m meta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	if m.ID != name {
		return nil, fmt.Errorf("sidecar ID %q does not match its file name %q", m.ID, name)
	}
	start, err := parseID(m.ID)
	if err != nil {
		return nil, err
	}
	if !m.Start.Equal(start) {
		return nil, fmt.Errorf("sidecar start %v does not match its ID %q", m.Start, m.ID)
	}
	m.Start = start
	switch {
	case m.DurationNS < 0:
		return nil, fmt.Errorf("sidecar %s: negative duration %d", name, m.DurationNS)
	case m.Samples < 0:
		return nil, fmt.Errorf("sidecar %s: negative sample count %d", name, m.Samples)
	case m.Size <= 0:
		return nil, fmt.Errorf("sidecar %s: profile size %d", name, m.Size)
	}
	if err := checkLabels(m.Labels); err != nil {
		return nil, fmt.Errorf("sidecar %s: %w", name, err)
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	return &m, nil
}
