package store

import (
	"testing"
	"time"
)

// FuzzParseMeta feeds sidecars as found in a data directory. parseMeta must
// not panic, and what it accepts must be self-consistent.
func FuzzParseMeta(f *testing.F) {
	start := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	id := windowID(start, map[string]string{"service_name": "a"})
	f.Add([]byte(`{"version":1,"id":"`+id+`","start":"2026-03-04T05:06:07.000000008Z","duration_ns":10000000000,"labels":{"service_name":"a"},"samples":3,"size":120,"crc32":1}`), id)
	f.Add([]byte(`{"version":2}`), id)
	f.Add([]byte(`{"version":1,"id":"x"}`), "x")
	f.Add([]byte(`{"version":1`), id)
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		m, err := parseMeta(data, name)
		if err != nil {
			return
		}
		if m.ID != name || m.Size <= 0 || m.DurationNS < 0 || m.Samples < 0 || m.Labels == nil {
			t.Fatalf("accepted inconsistent sidecar %+v", m)
		}
		got, err := parseID(m.ID)
		if err != nil || !got.Equal(m.Start) || m.Start.Format(hourLayout) != got.Format(hourLayout) {
			t.Fatalf("accepted ID %q with start %v", m.ID, m.Start)
		}
	})
}

// FuzzParseIndex feeds pack indexes as found in a data directory.
// parseIndex must not panic, and what it accepts must be self-consistent:
// targets of the window's start and their own labels, back to back.
func FuzzParseIndex(f *testing.F) {
	start := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	name := packName(start, 0)
	a := windowID(start, map[string]string{"service_name": "a"})
	b := windowID(start, map[string]string{"service_name": "b", "pid": "7"})
	f.Add([]byte(`{"version":1,"start":"2026-03-04T05:06:07.000000008Z","duration_ns":15000000000,"targets":[`+
		`{"id":"`+a+`","labels":{"service_name":"a"},"samples":3,"offset":0,"size":120,"crc32":1},`+
		`{"id":"`+b+`","labels":{"pid":"7","service_name":"b"},"samples":0,"offset":120,"size":80,"crc32":4294967295}]}`), name)
	f.Add([]byte(`{"version":1,"start":"2026-03-04T05:06:07.000000008Z","duration_ns":0,"targets":[{"id":"`+a+`","labels":{"service_name":"a"},"samples":1,"offset":5,"size":1,"crc32":0}]}`), name)
	f.Add([]byte(`{"version":1,"start":"2026-03-04T05:06:07.000000008Z","targets":[]}`), name)
	f.Add([]byte(`{"version":2}`), name)
	f.Add([]byte(`{"version":1`), packName(start, 12))
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		x, size, err := parseIndex(data, name)
		if err != nil {
			return
		}
		start, _, err := parsePackName(name)
		if err != nil || !x.Start.Equal(start) || x.DurationNS < 0 || len(x.Targets) == 0 || len(x.Targets) > maxTargets {
			t.Fatalf("accepted inconsistent index %s: %+v (%v)", name, x, err)
		}
		seen := map[string]bool{}
		var off int64
		for _, tg := range x.Targets {
			if tg.Labels == nil || tg.ID != windowID(start, tg.Labels) || seen[tg.ID] || tg.Offset != off || tg.Size <= 0 || tg.Samples < 0 {
				t.Fatalf("accepted inconsistent target %+v at offset %d", tg, off)
			}
			got, err := parseID(tg.ID)
			if err != nil || !got.Equal(start) {
				t.Fatalf("accepted ID %q of index %s", tg.ID, name)
			}
			seen[tg.ID] = true
			off += tg.Size
		}
		if off != size {
			t.Fatalf("pack size %d, targets end at %d", size, off)
		}
	})
}

func TestPackNameRoundTrip(t *testing.T) {
	start := time.Date(2026, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600))
	for _, seq := range []int{0, 1, 10, maxSeq} {
		got, gotSeq, err := parsePackName(packName(start, seq))
		if err != nil || !got.Equal(start) || gotSeq != seq {
			t.Errorf("parsePackName(%s) = %v, %d, %v", packName(start, seq), got, gotSeq, err)
		}
	}
	for _, bad := range []string{"", "20260304T040607.000000008Z", "20260304T040607.000000008Z-", "20260304T040607.000000008Z-01", "20260304T040607.000000008Z--1", "20260304T040607.000000008Z-+1", "20260304T040607.8Z-0", "20260304T040607.000000008Z-0123456789abcdef", "20260304T040607.000000008Z-99999999"} {
		if _, _, err := parsePackName(bad); err == nil {
			t.Errorf("parsePackName(%q) succeeded", bad)
		}
	}
}

func TestWindowIDRoundTrip(t *testing.T) {
	for _, start := range []time.Time{
		time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC),
		time.Date(2026, 3, 4, 5, 6, 7, 8, time.FixedZone("x", 3600)),
		time.Unix(1, 0),
	} {
		id := windowID(start, map[string]string{"b": "2", "a": "1"})
		if id != windowID(start, map[string]string{"a": "1", "b": "2"}) {
			t.Errorf("ID depends on map order")
		}
		if id == windowID(start, map[string]string{"a": "1", "b": "3"}) {
			t.Errorf("different labels, same ID %s", id)
		}
		got, err := parseID(id)
		if err != nil || !got.Equal(start) {
			t.Errorf("parseID(%s) = %v, %v; want %v", id, got, err, start)
		}
	}
	for _, bad := range []string{"", "x-0123456789abcdef", "20260304T050607.000000008Z-0123", "20260304T050607.8Z-0123456789abcdef", "20260304T050607.000000008Z-0123456789ABCDEF"} {
		if _, err := parseID(bad); err == nil {
			t.Errorf("parseID(%q) succeeded", bad)
		}
	}
}
