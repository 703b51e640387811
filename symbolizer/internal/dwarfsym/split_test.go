package dwarfsym

import (
	"debug/elf"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestSplitUnits compares reading a file one unit at a time with reading
// it whole: glibc's separate debug file (libc6-dbg) has an abbreviation
// table per unit, so it is split by default. Its sections are compressed:
// the split table decompresses them into a mapped file of a spill
// directory (whose pages it drops once its index is built), the whole one
// onto the heap, and both must answer the same.
func TestSplitUnits(t *testing.T) {
	const libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
	osf, err := os.Open(libc)
	if err != nil {
		t.Skipf("no %s: %v", libc, err)
	}
	defer osf.Close()
	f, err := elf.NewFile(osf)
	if err != nil {
		t.Fatal(err)
	}
	testenv.RequireTool(t, "/usr/lib/debug/.build-id")
	spill := t.TempDir()
	split, err := OpenFile(f, osf, libc, "", nil, spill)
	if err != nil {
		t.Fatalf("no DWARF for %s: its separate debug file comes with the Debian package libc6-dbg, which must match libc6's version: %v", libc, err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	spilled := strings.Count(string(maps), spill+"/")
	if spilled == 0 {
		t.Errorf("no mapping of a file in the spill directory %s: the compressed sections were not spilled", spill)
	} else {
		t.Logf("%d sections spilled to %s", spilled, spill)
	}
	if ents, _ := os.ReadDir(spill); len(ents) != spilled {
		t.Errorf("the spill directory holds %d files, want one per mapped section (%d)", len(ents), spilled)
	}
	if split.sec == nil {
		t.Fatalf("%s: %d units read whole, want one at a time", libc, len(split.units))
	}
	old := minSplitAbbrevs
	minSplitAbbrevs = 1 << 30
	whole, err := OpenFile(f, osf, libc, "", nil, "")
	minSplitAbbrevs = old
	if err != nil {
		t.Fatal(err)
	}
	if whole.sec != nil {
		t.Fatal("read one unit at a time with splitting off")
	}
	if !reflect.DeepEqual(split.unitRngs, whole.unitRngs) {
		t.Fatalf("unit ranges differ: %d split, %d whole", len(split.unitRngs), len(whole.unitRngs))
	}
	// Every 97th byte of every unit range, up to a bound.
	n, named := 0, 0
	for _, r := range whole.unitRngs {
		for pc := r.lo; pc < r.hi && n < 40000; pc += 97 {
			a, b := split.Resolve(pc), whole.Resolve(pc)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%#x: split %+v, whole %+v", pc, a, b)
			}
			n++
			if len(a) > 0 && a[0].Function != "" {
				named++
			}
		}
	}
	if named < n/2 {
		t.Errorf("only %d of %d addresses named", named, n)
	}
	t.Logf("%d units, %d addresses, %d named, same answers", len(split.units), n, named)
}
