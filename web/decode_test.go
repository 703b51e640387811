package web

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// sameLoaded reports how got (decode's) differs from want (prepare's on
// pprof's decoding of the same bytes), or "".
func sameLoaded(got, want *loaded) string {
	switch {
	case got.unit != want.unit:
		return "unit " + got.unit + ", want " + want.unit
	case !reflect.DeepEqual(got.frames, want.frames):
		return "frames differ"
	case len(got.stacks) != len(want.stacks):
		return "sample counts differ"
	case !reflect.DeepEqual(got.values, want.values):
		return "values differ"
	}
	for i := range got.stacks {
		if !reflect.DeepEqual(got.stacks[i], want.stacks[i]) && (len(got.stacks[i]) != 0 || len(want.stacks[i]) != 0) {
			return "stacks differ"
		}
		g, w := got.sampleLabels(i), want.sampleLabels(i)
		if !reflect.DeepEqual(labelMaps(g), labelMaps(w)) {
			return "labels differ"
		}
	}
	return ""
}

// labelMaps returns the labels of ls as pprof's maps, with numbers as
// "#n".
func labelMaps(ls sampleLabels) map[string][]string {
	m := map[string][]string{}
	for _, l := range ls {
		v := l.str
		if l.isNum {
			v = "#" + strconv.FormatInt(l.num, 10)
		}
		m[l.key] = append(m[l.key], v)
	}
	return m
}

// sameTrees reports how the trees built from got (decode's: the samples
// of one stack share it) differ from those built from want (prepare's:
// each sample has its own), grouped and focused as the viewer asks, or "".
func sameTrees(got, want *loaded) string {
	focus := ""
	if len(want.frames) > 1 {
		focus = want.frames[1].name
	}
	for _, fg := range [][2]string{{"", ""}, {"", "pid"}, {"", "comm"}, {focus, ""}, {focus, "pid"}} {
		var js [2][]byte
		for i, l := range []*loaded{got, want} {
			t := newTree(fg[0], fg[1])
			t.addProfile(l, 0, nil, nil)
			t.addProfile(l, 1, func(i int) bool { return i%3 != 0 }, map[string]string{"service_name": "s"})
			js[i] = t.appendJSON(nil, nil, true, 0, 0)
			js[i] = fmt.Appendf(js[i], "%v %v", t.top("total", 1<<20), t.ftotal)
		}
		if !bytes.Equal(js[0], js[1]) {
			return "trees differ, focus " + strconv.Quote(fg[0]) + ", grouped by " + strconv.Quote(fg[1])
		}
	}
	return ""
}

// decodeOracle decodes data with pprof's parser and prepares it, as the
// viewer does for a source that is not an EncodedSource.
func decodeOracle(data []byte) (*loaded, error) {
	p, err := profile.ParseUncompressed(data)
	if err != nil {
		return nil, err
	}
	return prepare(p)
}

func encode(t testing.TB, p *profile.Profile) []byte {
	var buf bytes.Buffer
	if err := p.WriteUncompressed(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDecodeAsPrepare: decode gives what pprof's parser and prepare give,
// on profiles with string and numeric labels, several values, kernel and
// JIT frames, inlined frames, and many samples.
func TestDecodeAsPrepare(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	withLabels := synth(start, time.Minute, []stack{
		{frames: []string{"main", "a", "k:sys_read"}, v: 3, labels: map[string]string{"comm": "app", "service_name": "api"}, pid: 10},
		{frames: []string{"main", "b", "j:jitted"}, v: 1, labels: map[string]string{"comm": "app"}, pid: 11},
		{frames: []string{"main", "a"}, v: 2, pid: 10},
		{frames: []string{"main"}, v: 5},
	})
	// A location with inlined frames, and one with no function name.
	inl := withLabels.Copy()
	loc := inl.Location[0]
	loc.Line = append(loc.Line, profile.Line{Function: inl.Function[1], Line: 3})
	inl.Location[1].Line = nil
	cases := map[string]*profile.Profile{
		"labels": withLabels,
		"inline": inl,
		"big":    bigProfile(500, 5000),
	}
	// Stacks repeated with labels the trees group by, or not.
	labelled := bigProfile(300, 3000)
	for i, smp := range labelled.Sample {
		smp.NumLabel = map[string][]int64{"pid": {int64(i % 7)}}
		smp.Label = map[string][]string{"comm": {strconv.Itoa(i % 3)}}
	}
	cases["big-labels"] = labelled
	for _, id := range []string{"w1", "w2", "w3"} {
		cases["source-"+id] = testSource().profs[id]
	}
	for name, p := range cases {
		t.Run(name, func(t *testing.T) {
			data := encode(t, p)
			want, err := decodeOracle(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode(data)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameLoaded(got, want); d != "" {
				t.Fatal(d)
			}
			if d := sameTrees(got, want); d != "" {
				t.Fatal(d)
			}
			if len(got.stacks) != len(p.Sample) {
				t.Fatalf("%d samples, want %d", len(got.stacks), len(p.Sample))
			}
		})
	}
	// The samples of one label set share it.
	l, err := decode(encode(t, withLabels))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.sets) != 4 || l.labels[0] == l.labels[1] || l.labels[2] == l.labels[0] {
		t.Errorf("label sets %v of samples %v, want 4 distinct", l.sets, l.labels)
	}
	// Samples with one stack share it.
	shared, err := decode(encode(t, synth(start, time.Minute, []stack{
		{frames: []string{"main", "a"}, v: 1, pid: 1},
		{frames: []string{"main", "a"}, v: 1, pid: 2},
	})))
	if err != nil {
		t.Fatal(err)
	}
	if len(shared.stacks) != 2 || &shared.stacks[0][0] != &shared.stacks[1][0] {
		t.Errorf("two samples of one stack do not share it")
	}
	// Numeric labels stay numbers, string labels strings.
	if got := l.sampleLabels(0); got.first("pid") != "10" || got.first("service_name") != "api" || got[len(got)-1] != (sampleLabel{key: "pid", num: 10, isNum: true}) {
		t.Errorf("labels of sample 0: %+v", got)
	}
}

// TestDecodeMalformed: what pprof's decoder or CheckValid rejects, decode
// rejects, with an error that says where for the wire format's errors.
func TestDecodeMalformed(t *testing.T) {
	good := encode(t, testSource().profs["w1"])
	withLoc := func(id uint64) []byte {
		p := testSource().profs["w1"].Copy()
		p.Sample[0].Location[0] = &profile.Location{ID: id}
		return encode(t, p)
	}
	cases := map[string]struct {
		data   []byte
		offset bool // a DecodeError with the offset
	}{
		"empty":            {nil, false},
		"truncated":        {good[:len(good)/2], false},
		"bad tag":          {append(append([]byte{}, good...), 0xff), true},
		"wire type 3":      {append(append([]byte{}, good...), 0x13), true},
		"sample as varint": {append([]byte{0x10, 0x01}, good...), true},
		"unknown location": {withLoc(999), true},
		"samples only":     {[]byte{0x12, 0x02, 0x08, 0x01}, false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeOracle(c.data); err == nil {
				t.Fatalf("pprof's parser accepts the case: it proves nothing")
			}
			_, err := decode(c.data)
			if err == nil {
				t.Fatal("decoded")
			}
			var de *DecodeError
			if c.offset && !errors.As(err, &de) {
				t.Errorf("error %q does not say where", err)
			}
		})
	}
}

// FuzzDecode: decode never panics, and whatever pprof's parser and
// prepare accept, decode accepts with the same result.
func FuzzDecode(f *testing.F) {
	b, err := os.ReadFile("testdata/cpusplit.pb.gz")
	if err != nil {
		f.Fatal(err)
	}
	if p, err := profile.Parse(bytes.NewReader(b)); err == nil {
		f.Add(encode(f, p))
	}
	for _, p := range testSource().profs {
		f.Add(encode(f, p))
	}
	f.Add(encode(f, bigProfile(20, 40)))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decode(data)
		want, werr := decodeOracle(data)
		if werr != nil {
			return
		}
		if err != nil {
			t.Fatalf("pprof's parser and prepare accept the profile, decode does not: %v", err)
		}
		if d := sameLoaded(got, want); d != "" {
			t.Fatal(d)
		}
		if d := sameTrees(got, want); d != "" {
			t.Fatal(d)
		}
	})
}
