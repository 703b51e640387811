package web

import (
	"container/list"
	"context"
	"fmt"
	"path"
	"strconv"
	"sync"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// unsymbolizedName names a location that has no line information: the
// mapping's base name and the file offset, or the bare address.
func unsymbolizedName(l *profile.Location) string {
	if m := l.Mapping; m != nil && m.File != "" && l.Address >= m.Start {
		return path.Base(m.File) + "+0x" + strconv.FormatUint(l.Address-m.Start+m.Offset, 16)
	}
	return "0x" + strconv.FormatUint(l.Address, 16)
}

// valueIndex picks the sample value the viewer shows: the "samples" type if
// the profile has one, else the profile's default sample type, else the
// first.
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

// frame is one function in a stack.
type frame struct {
	name string
	kind symbolizer.Kind // colour class, from exporter.FrameKind
}

// loaded is a profile prepared for repeated aggregation: every sample's
// stack resolved root-first into indexes of frames. It is immutable once
// built and shared between requests.
type loaded struct {
	p      *profile.Profile
	value  int       // index into Sample.Value
	unit   string    // "type/unit" of value
	frames []frame   // distinct frames of this profile
	stacks [][]int32 // per sample, root first, into frames
	bytes  int64     // estimated memory of all of it, for the cache
}

// prepare resolves the stacks of p. It validates p first: a profile from a
// store or a file is outside data and may be malformed.
func prepare(p *profile.Profile) (*loaded, error) {
	if err := p.CheckValid(); err != nil {
		return nil, err
	}
	l := &loaded{p: p, value: valueIndex(p)}
	if len(p.SampleType) > 0 {
		st := p.SampleType[l.value]
		l.unit = st.Type + "/" + st.Unit
	}
	frameIdx := make(map[frame]int32)
	locFrames := make(map[uint64][]int32, len(p.Location))
	intern := func(f frame) int32 {
		i, ok := frameIdx[f]
		if !ok {
			i = int32(len(l.frames))
			l.frames = append(l.frames, f)
			frameIdx[f] = i
		}
		return i
	}
	for _, loc := range p.Location {
		k := exporter.FrameKind(loc)
		var fs []int32
		// Line[0] is the innermost inlined function, the last entry its
		// outermost caller: walk them in reverse for root-first order.
		for i := len(loc.Line) - 1; i >= 0; i-- {
			fn := loc.Line[i].Function
			if fn == nil || fn.Name == "" {
				continue
			}
			fs = append(fs, intern(frame{fn.Name, k}))
		}
		if len(fs) == 0 {
			fs = append(fs, intern(frame{unsymbolizedName(loc), k}))
		}
		locFrames[loc.ID] = fs
	}
	l.stacks = make([][]int32, len(p.Sample))
	for si, s := range p.Sample {
		n := 0
		for _, loc := range s.Location {
			n += len(locFrames[loc.ID])
		}
		st := make([]int32, 0, n)
		// Sample.Location[0] is the leaf.
		for i := len(s.Location) - 1; i >= 0; i-- {
			st = append(st, locFrames[s.Location[i].ID]...)
		}
		l.stacks[si] = st
		l.bytes += int64(4*len(st) + 8*len(s.Location) + 120 + labelMapBytes(len(s.Label)) + labelMapBytes(len(s.NumLabel)) + labelMapBytes(len(s.NumUnit)))
	}
	l.bytes += int64(160*len(p.Location) + 120*len(p.Function) + 120*len(p.Mapping) + 40*len(l.frames))
	return l, nil
}

// labelMapBytes estimates the memory of a sample's label map of n labels
// (Sample.Label, NumLabel, NumUnit), as decoded: a group of 8 slots of
// key and slice per 8 labels, the map's header, and each label's slice.
// A merge of all targets carries two labels on every sample, and most of
// its memory is there.
func labelMapBytes(n int) int {
	if n == 0 {
		return 0
	}
	return 48 + 336*((n+7)/8) + 24*n
}

// cache keeps the most recently used prepared profiles, at most max of
// them and maxBytes of their estimated memory (loaded.bytes); the most
// recent one stays whatever its size.
type cache struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	bytes    int64
	order    *list.List // of *cacheEntry, most recent first
	byID     map[string]*list.Element
}

type cacheEntry struct {
	id string
	l  *loaded
}

func newCache(max int, maxBytes int64) *cache {
	return &cache{max: max, maxBytes: maxBytes, order: list.New(), byID: make(map[string]*list.Element)}
}

// get returns the prepared profile for window id, opening it from src when
// it is not cached. Concurrent misses for one id may open it twice; the
// last one wins, which is harmless.
func (c *cache) get(ctx context.Context, src Source, id string) (*loaded, error) {
	c.mu.Lock()
	if e, ok := c.byID[id]; ok {
		c.order.MoveToFront(e)
		l := e.Value.(*cacheEntry).l
		c.mu.Unlock()
		return l, nil
	}
	c.mu.Unlock()

	p, err := src.Open(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("opening window %q: %w", id, err)
	}
	if p == nil {
		return nil, fmt.Errorf("opening window %q: source returned no profile", id)
	}
	l, err := prepare(p)
	if err != nil {
		return nil, fmt.Errorf("window %q: invalid profile: %w", id, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[id]; ok {
		c.order.MoveToFront(e)
		ce := e.Value.(*cacheEntry)
		c.bytes += l.bytes - ce.l.bytes
		ce.l = l
	} else {
		c.byID[id] = c.order.PushFront(&cacheEntry{id, l})
		c.bytes += l.bytes
	}
	for c.order.Len() > c.max || c.bytes > c.maxBytes && c.order.Len() > 1 {
		e := c.order.Back()
		c.order.Remove(e)
		ce := e.Value.(*cacheEntry)
		c.bytes -= ce.l.bytes
		delete(c.byID, ce.id)
	}
	return l, nil
}
