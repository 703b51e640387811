package web

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/pprof/profile"
)

// Fields of pprof's profile.proto that decode reads itself.
const (
	fieldProfileSample      = 2
	fieldProfileStringTable = 6

	fieldSampleLocation = 1
	fieldSampleValue    = 2
	fieldSampleLabel    = 3

	fieldLabelKey  = 1
	fieldLabelStr  = 2
	fieldLabelNum  = 3
	fieldLabelUnit = 4
)

// Wire types of protobuf's encoding.
const (
	wireVarint = 0
	wireI64    = 1
	wireBytes  = 2
	wireI32    = 5
)

// A DecodeError says what in an encoded profile is malformed, and where.
type DecodeError struct {
	Off int    // byte offset in the encoded profile
	Msg string // what is wrong there
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("pprof protobuf: at byte %d: %s", e.Off, e.Msg)
}

// decode prepares a profile from its encoding (pprof's protobuf, not
// compressed) as prepare does from the decoded profile, with the same
// result, but without a profile.Profile's memory per sample: a sample's
// labels are decoded into a set shared by the samples that have the same,
// and its locations straight into frame indexes.
//
// It reads data twice. The first pass copies every field of the profile
// but its samples (sample types, mappings, locations, functions and the
// string table, which are small) and decodes that with
// profile.ParseUncompressed, then validates it with CheckValid; it also
// keeps the string table. The second pass decodes the samples with the
// checks pprof's decoder and CheckValid make on them: a value per sample
// type, every location known, every string index within the table. What
// pprof's decoder accepts, decode accepts (it reads the wire format as
// leniently), and the result is prepare's on that profile.
func decode(data []byte) (*loaded, error) {
	if len(data) == 0 {
		return nil, errors.New("pprof protobuf: no data")
	}
	var strs []string // the string table
	nsamples, sampleBytes := 0, 0
	err := eachField(data, 0, func(f wireField) error {
		switch f.num {
		case fieldProfileSample:
			if f.typ != wireBytes {
				return &DecodeError{f.off, "sample is not a message"}
			}
			nsamples++
			sampleBytes += len(f.raw)
		case fieldProfileStringTable:
			if f.typ == wireBytes {
				strs = append(strs, string(f.val))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The profile without its samples, copied at its size: grown by
	// appends, it was a tenth of the viewer's allocations.
	rest := make([]byte, 0, len(data)-sampleBytes)
	eachField(data, 0, func(f wireField) error {
		if f.num != fieldProfileSample {
			rest = append(rest, f.raw...)
		}
		return nil
	})
	if len(rest) == 0 {
		// pprof's decoder takes the samples of such a profile, and
		// CheckValid rejects them: no sample types.
		return nil, errors.New("missing sample type information")
	}
	p, err := profile.ParseUncompressed(rest)
	if err != nil {
		return nil, err
	}
	if nsamples > 0 && len(p.SampleType) == 0 {
		return nil, errors.New("missing sample type information")
	}
	if err := p.CheckValid(); err != nil {
		return nil, err
	}
	b := newBuilder(p)
	l := b.l
	l.values = make([]int64, 0, nsamples)
	l.labels = make([]int32, 0, nsamples)
	// Samples that differ only in their labels (a rollup merges the
	// windows of an hour: many pids, few stacks) share their stack.
	var all []int32                       // the distinct stacks, one after another
	var ends []int                        // end of each distinct stack in all
	stackOf := make([]int32, 0, nsamples) // per sample, into ends
	stackIdx := make(map[string]int32)    // location IDs as encoded to index into ends
	d := sampleDecoder{b: b, strs: strs, ntypes: len(p.SampleType)}
	err = eachField(data, 0, func(f wireField) error {
		if f.num != fieldProfileSample {
			return nil
		}
		if err := d.decode(f); err != nil {
			return err
		}
		si, ok := stackIdx[string(d.locKey)]
		if !ok {
			// The locations, leaf first, become frames root first.
			for i := len(d.locs) - 1; i >= 0; i-- {
				all = append(all, d.locs[i]...)
			}
			si = int32(len(ends))
			ends = append(ends, len(all))
			stackIdx[string(d.locKey)] = si
		}
		stackOf = append(stackOf, si)
		l.values = append(l.values, d.value)
		l.labels = append(l.labels, d.set)
		return nil
	})
	if err != nil {
		return nil, err
	}
	all = slices.Clip(all)
	stacks := make([][]int32, len(ends))
	start := 0
	for i, end := range ends {
		stacks[i] = all[start:end:end]
		start = end
	}
	l.stacks = make([][]int32, len(stackOf))
	for i, si := range stackOf {
		l.stacks[i] = stacks[si]
	}
	return b.finish(len(all)), nil
}

// sampleDecoder decodes one sample at a time, reusing its buffers.
type sampleDecoder struct {
	b      *builder
	strs   []string
	ntypes int

	// Of the last sample decoded:
	locs   [][]int32 // frames of each location, leaf first
	locKey []byte    // its location IDs as encoded (varints)
	value  int64     // the value shown
	set    int32     // its label set

	key    []byte  // label key: the labels' (kind, key, value) indexes
	labels []label // labels, in order
	nvals  int
}

// label is a label as encoded: indexes into the string table, and a
// number.
type label struct{ key, str, num, unit uint64 }

// decode decodes the sample in field f.
func (d *sampleDecoder) decode(f wireField) error {
	d.locs, d.locKey, d.labels, d.nvals, d.value = d.locs[:0], d.locKey[:0], d.labels[:0], 0, 0
	err := eachField(f.val, f.valOff, func(sf wireField) error {
		switch sf.num {
		case fieldSampleLocation:
			// Varints concatenated are read back one way: equal keys,
			// equal IDs. (IDs encoded two ways only share less.)
			if sf.typ == wireBytes {
				d.locKey = append(d.locKey, sf.val...)
			} else {
				d.locKey = appendUvarint(d.locKey, sf.u64)
			}
			return eachNumber(sf, func(id uint64) error {
				fs, ok := d.b.locFrames[id]
				if !ok || id == 0 {
					return &DecodeError{sf.off, fmt.Sprintf("sample has location %d, which the profile lacks", id)}
				}
				d.locs = append(d.locs, fs)
				return nil
			})
		case fieldSampleValue:
			return eachNumber(sf, func(v uint64) error {
				if d.nvals == d.b.value {
					d.value = int64(v)
				}
				d.nvals++
				return nil
			})
		case fieldSampleLabel:
			if sf.typ != wireBytes {
				return &DecodeError{sf.off, "label is not a message"}
			}
			var lb label
			err := eachField(sf.val, sf.valOff, func(lf wireField) error {
				var x *uint64
				switch lf.num {
				case fieldLabelKey:
					x = &lb.key
				case fieldLabelStr:
					x = &lb.str
				case fieldLabelNum:
					x = &lb.num
				case fieldLabelUnit:
					x = &lb.unit
				default:
					return nil
				}
				if lf.typ != wireVarint {
					return &DecodeError{lf.off, "label field is not a varint"}
				}
				*x = lf.u64
				return nil
			})
			if err != nil {
				return err
			}
			d.labels = append(d.labels, lb)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if d.nvals != d.ntypes {
		return &DecodeError{f.off, fmt.Sprintf("mismatch: sample has %d values vs. %d types", d.nvals, d.ntypes)}
	}
	// The labels as postDecode reads them: a string label if str is set,
	// else a numeric one if num or unit is; every index in the table.
	d.key = d.key[:0]
	for _, lb := range d.labels {
		if !d.inTable(lb.key) || lb.str != 0 && !d.inTable(lb.str) || lb.str == 0 && lb.unit != 0 && !d.inTable(lb.unit) {
			return &DecodeError{f.off, "sample label: string index out of the table"}
		}
		switch {
		case lb.str != 0:
			d.key = appendUvarint(append(appendUvarint(d.key, lb.key), 's'), lb.str)
		case lb.num != 0 || lb.unit != 0:
			d.key = appendUvarint(append(appendUvarint(d.key, lb.key), 'n'), lb.num)
		}
	}
	d.set = d.b.internLabels(d.key, d.labelSet)
	return nil
}

func (d *sampleDecoder) inTable(i uint64) bool {
	return i < uint64(len(d.strs))
}

// labelSet builds the label set of the last sample decoded.
func (d *sampleDecoder) labelSet() sampleLabels {
	var ls sampleLabels
	for _, lb := range d.labels {
		k := d.strs[lb.key]
		switch {
		case lb.str != 0:
			ls = append(ls, sampleLabel{key: k, str: d.strs[lb.str]})
		case lb.num != 0 || lb.unit != 0:
			ls = append(ls, sampleLabel{key: k, num: int64(lb.num), isNum: true})
		}
	}
	return slices.Clip(ls)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// wireField is one field of a protobuf message.
type wireField struct {
	num    uint64
	typ    int
	u64    uint64 // the value of a varint or fixed-size field
	val    []byte // the contents of a length-delimited field
	raw    []byte // the whole field, tag included
	off    int    // offset of the field's tag in the whole encoding
	valOff int    // offset of val in the whole encoding
}

// eachField calls fn on each field of the message encoded in data, which
// starts at offset base of the whole encoding. It reads the wire format
// as pprof's decoder does: varints of up to 10 bytes, wire types 0, 1, 2
// and 5, any field number.
func eachField(data []byte, base int, fn func(wireField) error) error {
	for off := 0; off < len(data); {
		f := wireField{off: base + off}
		tag, n := uvarint(data[off:])
		if n == 0 {
			return &DecodeError{base + off, "bad varint in a tag"}
		}
		f.num, f.typ = tag>>3, int(tag&7)
		pos := off + n
		switch f.typ {
		case wireVarint:
			if f.u64, n = uvarint(data[pos:]); n == 0 {
				return &DecodeError{base + pos, "bad varint"}
			}
			pos += n
		case wireI64:
			if len(data)-pos < 8 {
				return &DecodeError{base + pos, "not enough data for a fixed64"}
			}
			pos += 8
		case wireI32:
			if len(data)-pos < 4 {
				return &DecodeError{base + pos, "not enough data for a fixed32"}
			}
			pos += 4
		case wireBytes:
			size, n := uvarint(data[pos:])
			if n == 0 {
				return &DecodeError{base + pos, "bad varint in a length"}
			}
			pos += n
			if size > uint64(len(data)-pos) {
				return &DecodeError{base + pos, fmt.Sprintf("length %d runs past the end of its message", size)}
			}
			f.val, f.valOff = data[pos:pos+int(size)], base+pos
			pos += int(size)
		default:
			return &DecodeError{base + off, fmt.Sprintf("unknown wire type %d", f.typ)}
		}
		f.raw = data[off:pos]
		if err := fn(f); err != nil {
			return err
		}
		off = pos
	}
	return nil
}

// eachNumber calls fn on each number of a repeated integer field: one
// varint, or several packed in a length-delimited field.
func eachNumber(f wireField, fn func(uint64) error) error {
	switch f.typ {
	case wireVarint:
		return fn(f.u64)
	case wireBytes:
		for off := 0; off < len(f.val); {
			v, n := uvarint(f.val[off:])
			if n == 0 {
				return &DecodeError{f.valOff + off, "bad varint in a packed field"}
			}
			if err := fn(v); err != nil {
				return err
			}
			off += n
		}
		return nil
	}
	return &DecodeError{f.off, fmt.Sprintf("wire type %d for a repeated integer", f.typ)}
}

// uvarint decodes a varint of at most 10 bytes as pprof's decoder does
// (bits past 64 are dropped) and returns it and its length, 0 if data
// holds none.
func uvarint(data []byte) (uint64, int) {
	var u uint64
	for i := 0; i < 10 && i < len(data); i++ {
		u |= uint64(data[i]&0x7f) << (7 * i)
		if data[i]&0x80 == 0 {
			return u, i + 1
		}
	}
	return 0, 0
}
