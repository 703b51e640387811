package sampler

import (
	"context"
	"debug/elf"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// symMapping resolves addresses of one executable mapping with the ELF
// symbols of its file.
type symMapping struct {
	start, end, bias uint64
	name             string
	syms             []elf.Symbol // functions, sorted by address
}

// symbolTable reads the executable mappings of pid and their files'
// function symbols (symtab and dynsym; stripped libc has only the latter).
func symbolTable(t *testing.T, pid uint32) []symMapping {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d", pid)
	maps, err := process.ReadMaps(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []symMapping
	for _, mp := range maps {
		if !mp.Exec() || mp.Anonymous() || mp.Pseudo() {
			continue
		}
		f, err := process.OpenMapped(dir, mp)
		if err != nil {
			t.Fatalf("open %s: %v", mp.Path, err)
		}
		ef, err := elf.NewFile(f)
		if err != nil {
			f.Close()
			continue
		}
		var loads []elf.ProgHeader
		for _, p := range ef.Progs {
			loads = append(loads, p.ProgHeader)
		}
		adj, _ := process.TextAdj(loads)
		bias := process.Bias(mp, adj)
		sm := symMapping{start: mp.Start, end: mp.End, bias: bias, name: filepath.Base(mp.Path)}
		syms, _ := ef.Symbols()
		dyn, _ := ef.DynamicSymbols()
		for _, s := range append(syms, dyn...) {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
				sm.syms = append(sm.syms, s)
			}
		}
		slices.SortFunc(sm.syms, func(a, b elf.Symbol) int {
			switch {
			case a.Value < b.Value:
				return -1
			case a.Value > b.Value:
				return 1
			}
			return 0
		})
		out = append(out, sm)
		ef.Close()
		f.Close()
	}
	return out
}

// name is the function containing pc ("file+0xoff" when no symbol does).
func name(ms []symMapping, pc uint64) string {
	for _, m := range ms {
		if pc < m.start || pc >= m.end {
			continue
		}
		rel := pc - m.bias
		i, _ := slices.BinarySearchFunc(m.syms, rel+1, func(s elf.Symbol, v uint64) int {
			switch {
			case s.Value < v:
				return -1
			case s.Value > v:
				return 1
			}
			return 0
		})
		for i--; i >= 0; i-- {
			s := m.syms[i]
			if s.Value <= rel && (rel < s.Value+s.Size || s.Size == 0) {
				return s.Name
			}
			if s.Value+s.Size <= rel {
				break
			}
		}
		return fmt.Sprintf("%s+%#x", m.name, rel)
	}
	return fmt.Sprintf("%#x", pc)
}

// startWorkload runs testdata/bin/NAME for the rest of the test and lets
// it reach its hot loop.
func startWorkload(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := testenv.StartWorkload(t, name, args...)
	time.Sleep(300 * time.Millisecond)
	return cmd
}

// recordPid samples pid for d with the sampler's event loop running, and
// returns its samples with the final stats.
func recordPid(t *testing.T, opts Options, pid uint32, d time.Duration) ([]Sample, Stats, TableStats) {
	t.Helper()
	opts.Pids = []uint32{pid}
	if opts.Frequency == 0 {
		opts.Frequency = 499
	}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.ReadEvents(ctx, func(Event) {})
	}()
	defer func() { cancel(); wg.Wait() }()

	var all []Sample
	var st Stats
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(500 * time.Millisecond)
		smp, stats, err := s.Drain()
		if err != nil {
			t.Fatal(err)
		}
		all, st = append(all, smp...), stats
	}
	return all, st, s.TableStats()
}

// unwindCase is a workload, what its complete stacks look like, and which
// chains its hot functions must show.
type unwindCase struct {
	workload string
	// outermost are the functions a complete stack ends with.
	outermost []string
	// through must be in every complete stack of the main thread.
	through string
	// chains: a hot function and callers that must follow it, in order
	// ("a|b": either name).
	chains map[string][]string
}

var unwindCases = []unwindCase{
	{
		workload: "nofp-c", outermost: []string{"_start"}, through: "main",
		chains: map[string][]string{
			// Debian's libc is stripped: qsort's internals have no names,
			// and qsort is an alias of qsort_r. bsearch is inlined.
			"cmp_ints":  {"qsort|qsort_r", "phase_sort", "run", "main", "_start"},
			"cmp_key":   {"phase_search", "run", "main", "_start"},
			"leaf_work": {"recurse", "phase_recurse", "run", "main", "_start"},
		},
	},
	{workload: "nofp-cpp", outermost: []string{"_start"}, through: "main"},
	{workload: "nofp-rust", outermost: []string{"_start"}, through: "main"},
	// Go: goroutines end at goexit, system stacks at mstart or at the
	// functions that switched to them.
	{workload: "nofp-cgo", outermost: []string{"runtime.goexit.abi0", "runtime.mstart.abi0", "runtime.morestack.abi0", "runtime.mcall", "runtime.mcall.abi0", "runtime.rt0_go.abi0"}, through: "",
		chains: map[string][]string{"c_leaf": {"c_recurse", "c_entry", "main.burn", "main.main", "runtime.main"}}},
}

// complete says whether names (leaf first) is a whole stack for c; hot
// whether it holds one of the hot functions of c.chains, and chainsOK
// whether their callers follow them as listed.
func (c unwindCase) check(names []string) (complete, hot, chainsOK bool) {
	complete = len(names) > 1 && slices.Contains(c.outermost, names[len(names)-1]) &&
		(c.through == "" || slices.Contains(names, c.through))
	chainsOK = true
	for i, n := range names {
		want, ok := c.chains[n]
		if !ok {
			continue
		}
		hot = true
		j := i + 1
		for _, w := range want {
			for j < len(names) && !slices.Contains(strings.Split(w, "|"), names[j]) {
				j++
			}
			if j == len(names) {
				chainsOK = false
			}
		}
	}
	return complete, hot, chainsOK
}

// TestUnwindTables records each nofp workload with unwind tables and with
// frame pointers only, and checks that with tables at least 99% of the
// stacks reach the outermost frame, with the expected callers.
func TestUnwindTables(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range unwindCases {
		t.Run(c.workload, func(t *testing.T) {
			cmd := startWorkload(t, c.workload, "60")
			pid := uint32(cmd.Process.Pid)
			syms := symbolTable(t, pid)
			// share returns the fraction of complete stacks and, among
			// stacks with a hot function, that with the expected callers.
			share := func(samples []Sample) (complete, chains float64, n uint64, bad []string) {
				var ok, nhot, chainOK uint64
				for _, s := range samples {
					if s.Pid != pid || len(s.User) == 0 {
						continue
					}
					names := make([]string, len(s.User))
					for i, pc := range s.User {
						names[i] = name(syms, pc)
					}
					n += s.Count
					whole, hot, chain := c.check(names)
					if whole {
						ok += s.Count
					} else if len(bad) < 5 {
						bad = append(bad, strings.Join(names, " ← "))
					}
					if hot {
						nhot += s.Count
						if chain {
							chainOK += s.Count
						}
					}
				}
				if n == 0 {
					return 0, 0, 0, nil
				}
				chains = 1
				if nhot > 0 {
					chains = float64(chainOK) / float64(nhot)
				}
				return float64(ok) / float64(n), chains, n, bad
			}

			samples, st, ts := recordPid(t, Options{}, pid, 3*time.Second)
			complete, chains, n, bad := share(samples)
			t.Logf("tables: %d samples, %.2f%% complete, %.2f%% with the expected chains; stats %+v; tables %+v",
				n, 100*complete, 100*chains, st, ts)
			if n < 200 {
				t.Fatalf("only %d samples of the workload", n)
			}
			if complete < 0.99 {
				t.Errorf("%.2f%% of the stacks reach %v through %q, want ≥ 99%%; incomplete ones:\n%s",
					100*complete, c.outermost, c.through, strings.Join(bad, "\n"))
			}
			if chains < 0.99 {
				t.Errorf("%.2f%% of the stacks with a hot function have the expected callers, want ≥ 99%%", 100*chains)
			}
			if st.Unwound == 0 || ts.Files == 0 {
				t.Errorf("no stack was walked with tables: %+v %+v", st, ts)
			}

			samples, st, _ = recordPid(t, Options{FramePointersOnly: true}, pid, 2*time.Second)
			fpComplete, fpChains, fpN, _ := share(samples)
			t.Logf("frame pointers only: %d samples, %.2f%% complete (%.2f%% cut), %.2f%% with the expected callers",
				fpN, 100*fpComplete, 100*(1-fpComplete), 100*fpChains)
			if st.Unwound != 0 {
				t.Errorf("%d stacks walked with tables with FramePointersOnly", st.Unwound)
			}
			if fpComplete > 0.5 && (c.chains == nil || fpChains > 0.5) {
				t.Errorf("frame-pointer stacks: %.2f%% complete, %.2f%% with the expected callers: the workload does not need tables", 100*fpComplete, 100*fpChains)
			}
		})
	}
}
