package main

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// userStacks yields the samples of pid that have user frames, with the
// names userNames gives them.
func userStacks(p *profile.Profile, pid int) iter.Seq2[*profile.Sample, []string] {
	return func(yield func(*profile.Sample, []string) bool) {
		for _, s := range p.Sample {
			if len(s.NumLabel["pid"]) == 0 || s.NumLabel["pid"][0] != int64(pid) {
				continue
			}
			if names := userNames(s); len(names) > 0 && !yield(s, names) {
				return
			}
		}
	}
}

// userNames returns the function names of the user frames of s, leaf
// first (inlined functions included, innermost first), or nil when s has no
// user frame.
func userNames(s *profile.Sample) []string {
	var names []string
	for _, l := range s.Location {
		if exporter.FrameKind(l) == symbolizer.KindKernel {
			continue
		}
		if len(l.Line) == 0 {
			names = append(names, fmt.Sprintf("%#x", l.Address))
		}
		for _, ln := range l.Line {
			if ln.Function != nil {
				names = append(names, ln.Function.Name)
			}
		}
	}
	return names
}

// unwindWorkload describes what complete stacks of a testdata/nofp-*
// workload look like.
type unwindWorkload struct {
	name string
	// outermost: the functions a complete stack ends with.
	outermost []string
	// through must be in every complete stack ("" for none).
	through string
	// chains: hot function → callers that must follow it, in order
	// ("a|b": either name, "*a*": any name containing a).
	chains map[string][]string
}

var unwindWorkloads = []unwindWorkload{
	{
		name: "nofp-c", outermost: []string{"_start"}, through: "main",
		chains: map[string][]string{
			// qsort is an alias of qsort_r; with libc's debug info the
			// symbolizer says __GI___qsort_r (and msort_with_tmp inside).
			"cmp_ints":  {"*qsort*", "phase_sort", "run", "main", "_start"},
			"leaf_work": {"recurse", "phase_recurse", "run", "main", "_start"},
		},
	},
	{
		name: "nofp-cpp", outermost: []string{"_start"}, through: "main",
		chains: map[string][]string{
			"Accumulator<double>::step(double)": {"Accumulator<double>::run(int)", "accumulate_phase()", "run(double)", "main", "_start"},
		},
	},
	{
		name: "nofp-rust", outermost: []string{"_start"}, through: "main",
		chains: map[string][]string{
			"nofp_rust::mix":                     {"nofp_rust::recurse", "nofp_rust::recurse_phase", "nofp_rust::run", "nofp_rust::main", "main", "_start"},
			"nofp_rust::sort_phase::{{closure}}": {"*sort_by*", "nofp_rust::sort_phase", "nofp_rust::run", "nofp_rust::main", "main", "_start"},
		},
	},
	{
		// Go stacks end at goexit (goroutines) or where the runtime
		// switched to a system stack.
		name:      "nofp-cgo",
		outermost: []string{"runtime.goexit", "runtime.mstart", "runtime.morestack", "runtime.mcall", "runtime.rt0_go"},
		chains:    map[string][]string{"c_leaf": {"c_recurse", "c_entry", "main.burn", "main.main", "runtime.main"}},
	},
}

// score returns, among the samples of pid with user frames, the share of
// complete stacks, and among those holding a hot function of w.chains, the
// share with the expected callers.
func (w unwindWorkload) score(p *profile.Profile, pid int) (complete, chains float64, n, nhot int64, bad []string) {
	var ok, chainOK int64
	for s, names := range userStacks(p, pid) {
		n += s.Value[0]
		last := strings.TrimSuffix(names[len(names)-1], ".abi0")
		if slices.Contains(w.outermost, last) && (w.through == "" || slices.Contains(names, w.through)) {
			ok += s.Value[0]
		} else if len(bad) < 5 {
			bad = append(bad, strings.Join(names, " ← "))
		}
		hot, good := false, true
		for i, name := range names {
			want, isHot := w.chains[name]
			if !isHot {
				continue
			}
			hot = true
			j := i + 1
			for _, alt := range want {
				for j < len(names) && !matches(alt, names[j]) {
					j++
				}
				if j == len(names) {
					good = false
				}
			}
		}
		if hot {
			nhot += s.Value[0]
			if good {
				chainOK += s.Value[0]
			} else if len(bad) < 10 {
				bad = append(bad, "(callers) "+strings.Join(names, " ← "))
			}
		}
	}
	if n > 0 {
		complete = float64(ok) / float64(n)
	}
	chains = 1
	if nhot > 0 {
		chains = float64(chainOK) / float64(nhot)
	}
	return complete, chains, n, nhot, bad
}

// matches says whether name is one of the alternatives "a|b|*c*".
func matches(pattern, name string) bool {
	for _, alt := range strings.Split(pattern, "|") {
		if len(alt) > 2 && alt[0] == '*' && alt[len(alt)-1] == '*' {
			if strings.Contains(name, alt[1:len(alt)-1]) {
				return true
			}
		} else if alt == name {
			return true
		}
	}
	return false
}

// TestRecordUnwindTables records each workload built without frame
// pointers: with unwind tables (the default) ≥ 99% of its stacks reach
// the outermost frame with the expected callers; with
// --unwind-tables=false far fewer do.
func TestRecordUnwindTables(t *testing.T) {
	requireRoot(t)
	for _, w := range unwindWorkloads {
		t.Run(w.name, func(t *testing.T) {
			cmd := workload(t, w.name, "60")
			pid := cmd.Process.Pid
			p, _, _ := record(t, "--duration", "3s", "--frequency", "499", "--pid", fmt.Sprint(pid))
			complete, chains, n, nhot, bad := w.score(p, pid)
			t.Logf("unwind tables: %d samples, %.2f%% reach %v; %d with a hot function, %.2f%% of them with the expected callers",
				n, 100*complete, w.outermost, nhot, 100*chains)
			if n < 200 {
				t.Fatalf("only %d samples of the workload", n)
			}
			if complete < 0.99 {
				t.Errorf("%.2f%% of the stacks are complete, want ≥ 99%%; incomplete ones:\n%s", 100*complete, strings.Join(bad, "\n"))
			}
			if w.chains != nil && (nhot == 0 || chains < 0.99) {
				t.Errorf("%.2f%% of %d stacks with a hot function have the expected callers, want > 99%%; for example:\n%s", 100*chains, nhot, strings.Join(bad, "\n"))
			}

			p, _, _ = record(t, "--duration", "2s", "--frequency", "499", "--pid", fmt.Sprint(pid), "--unwind-tables=false")
			fpComplete, fpChains, fpN, _, _ := w.score(p, pid)
			t.Logf("--unwind-tables=false: %d samples, %.2f%% complete (%.2f%% cut), %.2f%% with the expected callers",
				fpN, 100*fpComplete, 100*(1-fpComplete), 100*fpChains)
			// Frame pointers alone lose the stacks (C, C++, Rust), or, in
			// the cgo case, skip the C frames between the leaf and Go.
			if fpComplete > 0.5 && (w.chains == nil || fpChains > 0.5) {
				t.Errorf("frame pointers alone: %.2f%% complete, %.2f%% with the expected callers; want much less than with tables",
					100*fpComplete, 100*fpChains)
			}
		})
	}
}
