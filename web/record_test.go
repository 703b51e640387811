package web

import (
	"flag"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var record = flag.Bool("record", false, "re-record testdata/cpusplit.pb.gz from testdata/cpusplit")

// TestRecordCPUSplit builds testdata/cpusplit, lets it profile itself for
// 3s of CPU, and checks that the viewer finds its 3:1 split in the fresh
// profile. With -record it replaces the committed fixture.
func TestRecordCPUSplit(t *testing.T) {
	if testing.Short() && !*record {
		t.Skip("records a 3s CPU profile; skipped in -short mode")
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "cpusplit")
	if out, err := exec.Command("go", "build", "-o", exe, "./testdata/cpusplit").CombinedOutput(); err != nil {
		t.Fatalf("building testdata/cpusplit: %v\n%s", err, out)
	}
	prof := filepath.Join(dir, "cpusplit.pb.gz")
	if out, err := exec.Command(exe, "-o", prof, "-d", "3s").CombinedOutput(); err != nil {
		t.Fatalf("running cpusplit: %v\n%s", err, out)
	}
	src, err := FileSource(prof)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Total int64
		Rows  []topRow
	}
	getJSON(t, NewHandler(src, Options{}), "/api/top", &r)
	if len(r.Rows) < 2 || r.Rows[0].Name != "main.burnHot" || r.Rows[1].Name != "main.burnCold" {
		t.Fatalf("top rows %v, want main.burnHot then main.burnCold", r.Rows[:min(3, len(r.Rows))])
	}
	share := 100 * float64(r.Rows[0].Self) / float64(r.Total)
	t.Logf("%d samples, burnHot %.1f%% self", r.Total, share)
	// Where a sample lands is as good as random (the burners' chunk
	// varies), so the share has binomial noise: allow four standard
	// deviations, which at the ≥300 samples asked for is under 8 points
	// and still tells 3:1 from 2:1 (66.7%).
	tol := 400 * math.Sqrt(0.75*0.25/float64(max(r.Total, 1)))
	if r.Total < 300 || math.Abs(share-75) > tol {
		t.Fatalf("%d samples with burnHot at %.1f%%, want ≥300 at 75±%.1f%%", r.Total, share, tol)
	}
	if *record {
		b, err := os.ReadFile(prof)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("testdata/cpusplit.pb.gz", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
