package unwinder

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// buildGoSplit builds testdata/gosplit twice: stripped (-ldflags='-s -w',
// no symbols, no .debug_frame) and not, with the same code layout.
func buildGoSplit(t *testing.T) (stripped, full string) {
	return buildGoTwice(t, "gosplit")
}

// buildGoTwice builds testdata/name stripped and not.
func buildGoTwice(t *testing.T, name string) (stripped, full string) {
	t.Helper()
	dir := t.TempDir()
	stripped, full = filepath.Join(dir, name+"-stripped"), filepath.Join(dir, name)
	for _, b := range [][]string{{"-ldflags=-s -w", "-o", stripped}, {"-o", full}} {
		cmd := exec.Command("go", append(append([]string{"build"}, b...), "./testdata/"+name)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", b, err, out)
		}
	}
	return stripped, full
}

// TestGoStrippedRows compares the table of a stripped Go binary, built
// from its pclntab alone, with the .debug_frame of its unstripped twin,
// which Go's linker writes from the same SP deltas: every CFA must agree.
func TestGoStrippedRows(t *testing.T) {
	testenv.RequireTool(t, "readelf")
	if runtime.GOARCH != "amd64" {
		t.Skip("pclntab rows are built on amd64 only")
	}
	stripped, full := buildGoSplit(t)
	f, tab := buildFile(t, stripped)
	if f.Section(".debug_frame") != nil || f.Section(".eh_frame") != nil || f.Section(".symtab") != nil {
		t.Fatalf("%s is not stripped", stripped)
	}
	compareWithReadelfOf(t, stripped, full)

	// The entry point (_rt0_amd64_linux) is the process's first frame:
	// its "return address" is argc, so unwinding stops there.
	if row, ok := tab.Lookup(f.Entry); !ok || row.Kind != KindEndOfStack {
		t.Errorf("row at the entry point %#x: %+v (found %v), want end of stack", f.Entry, row, ok)
	}
}

// goOutermost are the frames where a runtime stack ends: a goroutine's, a
// thread's, a system stack's (at the switch), and a signal handler's
// (runtime.sigtramp, a top frame as Go's own traceback has it; a stop can
// land while the thread handles a signal).
var goOutermost = []string{"runtime.goexit.abi0", "runtime.mstart.abi0", "runtime.morestack.abi0", "runtime.mcall", "runtime.mcall.abi0", "runtime.rt0_go.abi0", "runtime.systemstack.abi0", "runtime.sigtramp.abi0"}

// checkGoStack checks where a stack of a Go program ends: one in the
// program's code reaches runtime.goexit through main.main and
// runtime.main; one of the runtime alone (the scheduler after a
// preemption, the GC, on a system stack) ends in one of goOutermost, where
// the switch was.
func checkGoStack(t *testing.T, names []string) {
	t.Helper()
	inMain := slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "main.") })
	last := names[len(names)-1]
	switch {
	case inMain && (last != "runtime.goexit.abi0" || !slices.Contains(names, "main.main") || !slices.Contains(names, "runtime.main")):
		t.Errorf("stack does not reach runtime.goexit through main.main and runtime.main: %v", names)
	case !inMain && !slices.Contains(goOutermost, last):
		t.Errorf("runtime stack ends in %s, not one of %v: %v", last, goOutermost, names)
	}
}

// startGoStripped builds testdata/name stripped and not, starts the
// stripped one for 60 s, and returns its pid and a mapping cache that
// names its frames with the unstripped twin's symbols.
func startGoStripped(t *testing.T, name string) (int, map[string]*procMapping) {
	t.Helper()
	stripped, full := buildGoTwice(t, name)
	cmd := exec.Command(stripped, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(200 * time.Millisecond)
	pid := cmd.Process.Pid
	// Name frames with the unstripped twin's symbols.
	cache := map[string]*procMapping{}
	processMappings(t, pid, cache)
	ef, err := elf.Open(full)
	if err != nil {
		t.Fatal(err)
	}
	syms, err := ef.Symbols()
	ef.Close()
	if err != nil {
		t.Fatal(err)
	}
	var named []elf.Symbol
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
			named = append(named, s)
		}
	}
	slices.SortFunc(named, func(a, b elf.Symbol) int { return int(int64(a.Value - b.Value)) })
	cache[stripped].syms = named
	return pid, cache
}

// TestGoLeafCallers samples a stripped Go program whose time splits 75/25
// between hot1 and hot2, both calling one frameless leaf, by stopping it
// and unwinding it with its pclntab table: the leaf's caller must always
// be there, the callers' shares must be 75% and 25% within binomial
// bounds, and every stack must reach runtime.goexit through main.main and
// runtime.main. The frame pointer chain alone, for comparison, drops the
// leaf's caller.
func TestGoLeafCallers(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("pclntab rows are built on amd64 only; PTRACE_GETREGS register names are amd64")
	}
	pid, cache := startGoStripped(t, "gosplit")

	var n, hot1, hot2, inLeaf, fpMissing int64
	const samples = 200
	for i := 0; i < samples; i++ {
		names, fpNames := sampleGoStopped(t, pid, cache)
		if len(names) == 0 {
			continue
		}
		checkGoStack(t, names)
		if names[0] == "main.leaf" {
			inLeaf++
			if len(names) < 2 || names[1] != "main.hot1" && names[1] != "main.hot2" {
				t.Errorf("main.leaf called from %v, want main.hot1 or main.hot2", names[1:])
			}
			if len(fpNames) < 2 || fpNames[1] != "main.hot1" && fpNames[1] != "main.hot2" {
				fpMissing++
			}
		}
		switch {
		case slices.Contains(names, "main.hot1"):
			hot1++
			n++
		case slices.Contains(names, "main.hot2"):
			hot2++
			n++
		}
		if t.Failed() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d samples: %d in main.leaf; hot1 %d, hot2 %d; the frame pointer chain alone missed the leaf's caller in %d", samples, inLeaf, hot1, hot2, fpMissing)
	testenv.CheckShare(t, "samples under main.hot1", hot1, n, 0.75, 0)
	testenv.CheckShare(t, "samples under main.hot2", hot2, n, 0.25, 0)
	if float64(n) < 0.9*samples {
		t.Errorf("only %d of %d samples under main.hot1 or main.hot2", n, samples)
	}
	if inLeaf > 0 && fpMissing != inLeaf {
		t.Errorf("the frame pointer chain found the leaf's caller in %d of %d samples: the leaf is not frameless", inLeaf-fpMissing, inLeaf)
	}
}

// TestGoClockCallers samples a stripped Go program that reads the clock
// in a loop (testdata/goclock): time.now and runtime.nanotime1 switch to
// the system stack to call the vDSO, so a sample there has its SP on
// another stack than its callers. Every stack must still reach
// runtime.goexit through main.clock or main.main, and runtime.main.
func TestGoClockCallers(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("pclntab rows are built on amd64 only; PTRACE_GETREGS register names are amd64")
	}
	pid, cache := startGoStripped(t, "goclock")
	const samples = 200
	var n, inClock int
	for i := 0; i < samples; i++ {
		names, _ := sampleGoStopped(t, pid, cache)
		if len(names) == 0 {
			continue
		}
		n++
		if slices.Contains(names, "time.now") || slices.Contains(names, "runtime.nanotime1.abi0") {
			inClock++
		}
		checkGoStack(t, names)
		if t.Failed() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("%d samples, %d in time.now or runtime.nanotime1", n, inClock)
	// By construction most of the time is spent reading the clock; the
	// bound only guards that the test still samples what it is about.
	if inClock < n/4 {
		t.Errorf("only %d of %d samples read the clock: the workload does not test the stack switch", inClock, n)
	}
}
