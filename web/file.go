package web

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/pprof/profile"
)

// fileSource is a Source over one pprof file: a single window that spans
// the profile's own time range.
type fileSource struct {
	w Window
	p *profile.Profile
}

// FileSource returns a Source serving the pprof file at path (any pprof:
// gzipped or not, a `scorch record` profile or a Go runtime/pprof CPU
// profile) as a single window.
//
// The window starts at the profile's TimeNanos and lasts DurationNanos.
// A profile without a time uses the file's modification time as its end;
// one without a duration is given the CPU time its samples represent
// (samples × period when the period is in nanoseconds), or one second.
// The window has a single label, "file", the base name of path: per-process
// labels such as comm and pid live on the samples, and the viewer filters
// on them there.
func FileSource(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("web: parsing %s: %w", path, err)
	}
	if err := p.CheckValid(); err != nil {
		return nil, fmt.Errorf("web: %s is not a valid profile: %w", path, err)
	}
	vi := valueIndex(p)
	var samples int64
	for _, s := range p.Sample {
		samples += s.Value[vi]
	}
	dur := time.Duration(p.DurationNanos)
	if dur <= 0 {
		dur = time.Second
		if p.PeriodType != nil && p.PeriodType.Unit == "nanoseconds" && p.Period > 0 && samples > 0 {
			dur = time.Duration(p.Period * samples)
		}
	}
	var start time.Time
	if p.TimeNanos > 0 {
		start = time.Unix(0, p.TimeNanos)
	} else {
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		start = fi.ModTime().Add(-dur)
	}
	return &fileSource{
		w: Window{
			ID:       "file",
			Start:    start,
			Duration: dur,
			Labels:   map[string]string{"file": filepath.Base(path)},
			Samples:  samples,
		},
		p: p,
	}, nil
}

func (s *fileSource) Windows(ctx context.Context, from, to time.Time) ([]Window, error) {
	if !overlaps(s.w, from, to) {
		return nil, nil
	}
	return []Window{s.w}, nil
}

func (s *fileSource) Open(ctx context.Context, id string) (*profile.Profile, error) {
	if id != s.w.ID {
		return nil, fmt.Errorf("web: no window %q", id)
	}
	return s.p, nil
}

// overlaps reports whether w intersects [from, to). A window of zero
// duration is an instant and overlaps when it lies inside the range.
func overlaps(w Window, from, to time.Time) bool {
	end := w.Start.Add(w.Duration)
	if w.Duration <= 0 {
		return !w.Start.Before(from) && w.Start.Before(to)
	}
	return w.Start.Before(to) && end.After(from)
}
