// Package perfmap reads the symbol maps that JIT compilers write for perf
// (/tmp/perf-PID.map; node --perf-basic-prof, the JVM with perf-map-agent,
// .NET with DOTNET_PerfMapEnabled), one code region per line:
//
//	START SIZE name
//
// START and SIZE are hex, with or without 0x. The file is append-only; a
// region written later replaces earlier ones it overlaps (the JIT reused
// the memory).
package perfmap

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Entry is one named code region.
type Entry struct {
	Start, Size uint64
	Name        string
}

// MaxEntries bounds a table.
const MaxEntries = 4 << 20

// ErrTooLarge is returned when a map has more than MaxEntries entries.
var ErrTooLarge = errors.New("perfmap: too many entries")

// ParseLine parses one line of a perf map.
func ParseLine(line string) (Entry, error) {
	start, rest, ok := strings.Cut(line, " ")
	if !ok {
		return Entry{}, fmt.Errorf("perfmap: no size in %q", line)
	}
	size, name, ok := strings.Cut(rest, " ")
	if !ok || name == "" {
		return Entry{}, fmt.Errorf("perfmap: no name in %q", line)
	}
	s, err := parseHex(start)
	if err != nil {
		return Entry{}, fmt.Errorf("perfmap: start in %q: %w", line, err)
	}
	n, err := parseHex(size)
	if err != nil {
		return Entry{}, fmt.Errorf("perfmap: size in %q: %w", line, err)
	}
	if s+n < s {
		return Entry{}, fmt.Errorf("perfmap: region in %q wraps around", line)
	}
	return Entry{Start: s, Size: n, Name: name}, nil
}

func parseHex(s string) (uint64, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("%q is not 64-bit hex", s)
	}
	return strconv.ParseUint(s, 16, 64)
}

// Table is a perf map, sorted by address, without overlaps.
type Table struct {
	entries []Entry
}

// Append parses the lines in r (only whole lines: a trailing partial line is
// left for the next read) and adds them to t. It returns the bytes
// consumed. Malformed lines are skipped and counted.
func (t *Table) Append(r io.Reader) (consumed int64, bad int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var added []Entry
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Over-long line: skip to its end.
			consumed += int64(len(line))
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				consumed += int64(len(line))
			}
			bad++
			if err != nil {
				break
			}
			continue
		}
		if err != nil { // io.EOF: a partial line stays unread
			break
		}
		consumed += int64(len(line))
		e, perr := ParseLine(string(bytes.TrimRight(line, "\r\n")))
		if perr != nil {
			bad++
			continue
		}
		added = append(added, e)
		if len(t.entries)+len(added) > MaxEntries {
			return consumed, bad, ErrTooLarge
		}
	}
	t.merge(added)
	return consumed, bad, nil
}

// merge adds newer entries: each replaces the older ones it overlaps.
func (t *Table) merge(added []Entry) {
	if len(added) == 0 {
		return
	}
	all := append(t.entries, added...)
	// Keep insertion order as the tie-breaker: stable sort by start, then
	// sweep keeping the latest writer of every byte range by dropping
	// older overlapping regions.
	type ent struct {
		Entry
		seq int
	}
	es := make([]ent, len(all))
	for i, e := range all {
		es[i] = ent{e, i}
	}
	slices.SortStableFunc(es, func(a, b ent) int { return cmp.Compare(a.Start, b.Start) })
	out := make([]Entry, 0, len(es))
	seqs := make([]int, 0, len(es))
	for _, e := range es {
		// Drop older kept entries that overlap e; drop e if a newer kept
		// entry overlaps it.
		for len(out) > 0 {
			last := out[len(out)-1]
			if last.Start+last.Size <= e.Start || e.Size == 0 {
				break
			}
			if seqs[len(seqs)-1] > e.seq {
				e.Size = 0 // newer region wins; e is hidden
				break
			}
			out, seqs = out[:len(out)-1], seqs[:len(seqs)-1]
		}
		if e.Size > 0 {
			out, seqs = append(out, e.Entry), append(seqs, e.seq)
		}
	}
	t.entries = out
}

// Lookup returns the region containing addr.
func (t *Table) Lookup(addr uint64) (Entry, bool) {
	i, found := slices.BinarySearchFunc(t.entries, addr, func(e Entry, a uint64) int { return cmp.Compare(e.Start, a) })
	if !found {
		i--
	}
	if i < 0 || addr >= t.entries[i].Start+t.entries[i].Size {
		return Entry{}, false
	}
	return t.entries[i], true
}

// Len returns the number of regions.
func (t *Table) Len() int { return len(t.entries) }

// Size estimates the bytes the table holds.
func (t *Table) Size() int64 {
	n := int64(len(t.entries)) * 40
	for _, e := range t.entries {
		n += int64(len(e.Name))
	}
	return n
}
