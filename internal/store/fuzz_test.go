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
