package zz

import (
	"context"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/scorch-profiler/scorch/internal/store"
)

func TestStats(t *testing.T) {
	st, err := store.Open("/tmp/vstore", store.Options{MaxAge: 8 * 24 * time.Hour, MaxBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for k := 0; k <= len(st.Levels()); k++ {
		ws, err := st.MergedAt(ctx, time.Time{}, time.Now().Add(time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		var maxb int64
		var big string
		for _, w := range ws {
			if w.Bytes > maxb {
				maxb, big = w.Bytes, w.ID
			}
		}
		raw, _ := st.OpenEncoded(ctx, big)
		p, _ := profile.ParseUncompressed(raw)
		stacks := map[string]int{}
		locs := 0
		for _, s := range p.Sample {
			k := ""
			for _, l := range s.Location {
				k += string(rune(l.ID))
			}
			stacks[k]++
			locs += len(s.Location)
		}
		t.Logf("level %d: %d windows, biggest %d bytes gz, %d raw, %d samples, %d distinct stacks, %d location refs, %d locations", k, len(ws), maxb, len(raw), len(p.Sample), len(stacks), locs, len(p.Location))
	}
}
