package web

import (
	"container/list"
	"context"
	"fmt"
	"maps"
	"path"
	"slices"
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
// stack resolved root-first into indexes of frames, the one value the
// viewer shows, and its labels as one of a few shared sets. It keeps no
// *profile.Profile: a decoded profile holds maps of labels per sample,
// and a rollup of all targets of an hour has hundreds of thousands of
// samples. It is immutable once built and shared between requests.
type loaded struct {
	unit   string         // "type/unit" of the value shown
	frames []frame        // distinct frames of this profile
	stacks [][]int32      // per sample, root first, into frames
	values []int64        // per sample, the value shown
	labels []int32        // per sample, into sets
	sets   []sampleLabels // distinct label sets of the samples
	bytes  int64          // estimated memory of all of it, for the cache
}

// sampleLabels are the labels of samples: string labels and numeric ones
// (pid, tid), the values of each key in order. A set is shared by every
// sample that has it and never modified. (A slice, not pprof's maps: a
// sample has a few labels, and a rollup thousands of sets.)
type sampleLabels []sampleLabel

type sampleLabel struct {
	key   string
	str   string // a string label's value
	num   int64  // a numeric label's value
	isNum bool
}

// labelsOf returns the labels of a sample of a profile.Profile, keys
// sorted.
func labelsOf(s *profile.Sample) sampleLabels {
	var ls sampleLabels
	for _, k := range slices.Sorted(maps.Keys(s.Label)) {
		for _, v := range s.Label[k] {
			ls = append(ls, sampleLabel{key: k, str: v})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.NumLabel)) {
		for _, n := range s.NumLabel[k] {
			ls = append(ls, sampleLabel{key: k, num: n, isNum: true})
		}
	}
	return ls
}

// first returns the first value of key, a string label's before a
// numeric one's, as text ("" if the set has no such label).
func (ls sampleLabels) first(key string) string {
	n := -1
	for i, l := range ls {
		if l.key != key {
			continue
		}
		if !l.isNum {
			return l.str
		}
		if n < 0 {
			n = i
		}
	}
	if n >= 0 {
		return strconv.FormatInt(ls[n].num, 10)
	}
	return ""
}

// sampleLabels returns the label set of sample i.
func (l *loaded) sampleLabels(i int) sampleLabels {
	return l.sets[l.labels[i]]
}

// prepare resolves the stacks of p. It validates p first: a profile from a
// store or a file is outside data and may be malformed.
func prepare(p *profile.Profile) (*loaded, error) {
	if err := p.CheckValid(); err != nil {
		return nil, err
	}
	b := newBuilder(p)
	b.l.stacks = make([][]int32, len(p.Sample))
	b.l.values = make([]int64, len(p.Sample))
	b.l.labels = make([]int32, len(p.Sample))
	for si, s := range p.Sample {
		n := 0
		for _, loc := range s.Location {
			n += len(b.locFrames[loc.ID])
		}
		st := make([]int32, 0, n)
		// Sample.Location[0] is the leaf.
		for i := len(s.Location) - 1; i >= 0; i-- {
			st = append(st, b.locFrames[s.Location[i].ID]...)
		}
		b.l.stacks[si] = st
		b.l.values[si] = s.Value[b.value]
		b.l.labels[si] = b.internLabels(labelKeyOf(s), func() sampleLabels { return labelsOf(s) })
	}
	return b.finish(-1), nil
}

// builder builds a loaded from a profile's locations, then its samples.
type builder struct {
	l         *loaded
	value     int                // index into the samples' values
	locFrames map[uint64][]int32 // per location ID, its frames root first
	setIdx    map[string]int32   // label key (labelKeyOf, or the decoder's) to index in l.sets
}

func newBuilder(p *profile.Profile) *builder {
	b := &builder{l: &loaded{}, value: valueIndex(p), setIdx: make(map[string]int32)}
	if len(p.SampleType) > 0 {
		st := p.SampleType[b.value]
		b.l.unit = st.Type + "/" + st.Unit
	}
	frameIdx := make(map[frame]int32)
	intern := func(f frame) int32 {
		i, ok := frameIdx[f]
		if !ok {
			i = int32(len(b.l.frames))
			b.l.frames = append(b.l.frames, f)
			frameIdx[f] = i
		}
		return i
	}
	b.locFrames = make(map[uint64][]int32, len(p.Location))
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
		b.locFrames[loc.ID] = fs
	}
	return b
}

// internLabels returns the index of the label set identified by key, made
// by mk the first time the key is met.
func (b *builder) internLabels(key []byte, mk func() sampleLabels) int32 {
	if i, ok := b.setIdx[string(key)]; ok {
		return i
	}
	i := int32(len(b.l.sets))
	ls := mk()
	b.l.sets = append(b.l.sets, ls)
	b.setIdx[string(key)] = i
	// The key in the map, and the set (its strings are the profile's, or
	// the string table's, counted with the frames).
	b.l.bytes += int64(2*len(key) + 64 + 48*len(ls))
	return i
}

// finish adds the estimate of what the samples and frames hold: nframes
// frames in all stacks, or -1 if the samples' stacks are not shared.
func (b *builder) finish(nframes int) *loaded {
	l := b.l
	if nframes < 0 {
		nframes = 0
		for _, st := range l.stacks {
			nframes += len(st)
		}
	}
	l.bytes += int64(4 * nframes)
	l.bytes += int64((24+8+4)*len(l.stacks) + 40*len(l.frames))
	for _, f := range l.frames {
		l.bytes += int64(len(f.name))
	}
	return l
}

// labelKeyOf identifies the labels of s: keys sorted, each with its
// values in order.
func labelKeyOf(s *profile.Sample) []byte {
	var key []byte
	for _, k := range slices.Sorted(maps.Keys(s.Label)) {
		key = strconv.AppendQuote(append(key, 's'), k)
		for _, v := range s.Label[k] {
			key = strconv.AppendQuote(key, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.NumLabel)) {
		key = strconv.AppendQuote(append(key, 'n'), k)
		for _, v := range s.NumLabel[k] {
			key = strconv.AppendInt(append(key, ' '), v, 10)
		}
	}
	return key
}

// open opens window id of src and prepares it: from its encoded form when
// src has one (EncodedSource), without building a profile.Profile.
func open(ctx context.Context, src Source, id string) (*loaded, error) {
	if es, ok := src.(EncodedSource); ok {
		data, err := es.OpenEncoded(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("opening window %q: %w", id, err)
		}
		l, err := decode(data)
		if err != nil {
			return nil, fmt.Errorf("window %q: invalid profile: %w", id, err)
		}
		return l, nil
	}
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
	return l, nil
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

	l, err := open(ctx, src, id)
	if err != nil {
		return nil, err
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
