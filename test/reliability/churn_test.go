package reliability

import (
	"context"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// rssGrowthBound is how much the agent's resident memory may grow while
// thousands of processes come and go: per-process state must be released,
// so growth is only the caches (bounded by --symbol-cache-size) warming.
// The symbol cache is bounded to 32 MiB here (--symbol-cache-size); the
// rest is the Go heap's headroom.
const rssGrowthBound = 96 << 20

// TestChurn runs the agent while thousands of short-lived processes come
// and go: the agent stays up, its memory stays within rssGrowthBound of
// where it was before the churn, what it kept per process is released
// once the processes are gone, and the short-lived processes' samples are
// named. It logs why the burners' samples that name neither hot function
// do not, by reason; SCORCH_CHURN_HEAP=DIR saves the agent's heap
// profiles before the churn and at its RSS peak.
func TestChurn(t *testing.T) {
	requireRoot(t)
	burner := workload(t, "cpuburn-c")
	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	data := t.TempDir()
	a := startAgent(t, "--interval", "5s", "--frequency", "99", "--data-dir", data, "--pyroscope-url", srv.URL,
		"--symbol-cache-size", "32MiB")

	time.Sleep(6 * time.Second) // warm up: kallsyms, the host's long-lived processes
	base := a.rss()
	m0 := a.metrics()
	if dir := os.Getenv("SCORCH_CHURN_HEAP"); dir != "" {
		a.saveHeapProfile(filepath.Join(dir, "churn-before.heap"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started, wait := churn(ctx, t, burner, 1)
	var peak, anonPeak, filePeak int64
	var heapPeak float64
	anon0, file0 := procStatusKB(a.pid, "RssAnon"), procStatusKB(a.pid, "RssFile")
	for ctx.Err() == nil {
		if r := a.rss(); r > peak {
			peak = r
			anonPeak, filePeak = procStatusKB(a.pid, "RssAnon"), procStatusKB(a.pid, "RssFile")
			heapPeak = a.metrics()["go_memstats_heap_inuse_bytes"]
			if dir := os.Getenv("SCORCH_CHURN_HEAP"); dir != "" {
				// Where the memory goes, for a person chasing growth.
				a.saveHeapProfile(filepath.Join(dir, "churn-peak.heap"))
			}
		}
		if !a.alive() {
			t.Fatalf("agent died during churn:\n%s", a.logs)
		}
		time.Sleep(time.Second)
	}
	wait()
	t.Logf("churn: %d processes in 30s; RSS %d MiB before, peak %d MiB (anonymous %d then %d MiB, file-backed %d then %d MiB; Go heap in use %.0f then %.0f MiB)",
		started.Load(), base>>20, peak>>20, anon0>>10, anonPeak>>10, file0>>10, filePeak>>10,
		m0["go_memstats_heap_inuse_bytes"]/(1<<20), heapPeak/(1<<20))
	if started.Load() < 1000 {
		t.Errorf("only %d processes started; the test wants thousands", started.Load())
	}
	if peak-base > rssGrowthBound {
		t.Errorf("RSS grew by %d MiB during churn, bound %d MiB", (peak-base)>>20, rssGrowthBound>>20)
	}

	// Per-process state follows the processes: within two sweeps (20s)
	// the agent holds no more processes than are alive, give or take the
	// ones other tests on the host started and ended within the last 20s
	// (at most 5% of our churn's).
	var m map[string]float64
	var live int
	released := waitFor(30*time.Second, func() bool {
		m = a.metrics()
		live = liveProcesses()
		bound := float64(live) + 0.05*float64(started.Load())
		return m["scorch_symbolizer_processes"] <= bound &&
			m["scorch_tracked_processes"] <= bound &&
			m["scorch_targets_cached_processes"] <= bound
	})
	t.Logf("after churn: %d live processes; symbolizer holds %.0f (before churn %.0f), tracked %.0f, targets cached %.0f, swept %.0f, lost %v",
		live, m["scorch_symbolizer_processes"], m0["scorch_symbolizer_processes"], m["scorch_tracked_processes"],
		m["scorch_targets_cached_processes"], m["scorch_swept_processes_total"], sum(m, "scorch_lost_total"))
	if !released {
		t.Errorf("state of exited processes not released: symbolizer %.0f, tracked %.0f, targets %.0f processes; %d alive",
			m["scorch_symbolizer_processes"], m["scorch_tracked_processes"], m["scorch_targets_cached_processes"], live)
	}

	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	// The local store keeps the thread names (comm) that the push leaves
	// out (Pyroscope would make each a series).
	ws := storeWindows(t, data)
	if len(rcv.windows(nil)) == 0 {
		t.Errorf("nothing was pushed")
	}
	hit, all := frameShare(ws, commIs("cpuburn-c"), "hot_a", "hot_b")
	var named, allW int64
	for _, w := range ws {
		for _, s := range w.prof.Sample {
			if commIs("cpuburn-c")(s) {
				allW += s.Value[0]
				if w.labels["service_name"] == "cpuburn-c" {
					named += s.Value[0]
				}
			}
		}
	}
	misses := missesByReason(ws, commIs("cpuburn-c"), "hot_a", "hot_b")
	// The burners' own program: the samples that name hot_a or hot_b, that
	// ran elsewhere in cpuburn-c's executable, or that the agent failed to
	// name (an address in no mapping it knew, a mapped address left
	// unnamed, no user stack): every failure of the agent counts against
	// it. What really ran elsewhere is left out: execve, the dynamic
	// loader and libc's start-up and exit, which cost about 4 ms of CPU
	// per process on a paravirtualised VM whose page-table updates trap
	// (/bin/true: 2 ms user + 2 ms system), 10-15% of a burner that does
	// one or two 30 ms rounds.
	own := hit
	for _, m := range misses {
		if m.agentMiss || m.reason == "ran in cpuburn-c" {
			own += m.samples
		}
	}
	t.Logf("cpuburn-c samples: %d, %d naming hot_a or hot_b (%.1f%% of all, %.1f%% of the %d in its own program or not named); %d under service_name cpuburn-c",
		all, hit, 100*float64(hit)/float64(max(all, 1)), 100*float64(hit)/float64(max(own, 1)), own, named)
	logMisses(t, misses)
	if all < 500 {
		t.Fatalf("only %d samples of the short-lived burners arrived", all)
	}
	if float64(hit) < 0.9*float64(own) {
		t.Errorf("%.1f%% of the short-lived burners' samples in their own program (or not named) name hot_a or hot_b, want >= 90%%", 100*float64(hit)/float64(own))
	}
	if float64(named) < 0.9*float64(allW) {
		t.Errorf("%d of %d short-lived burner samples are under service_name cpuburn-c, want >= 90%%", named, allW)
	}
}

func liveProcesses() int {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if strings.Trim(e.Name(), "0123456789") == "" {
			n++
		}
	}
	return n
}

// miss is one reason why samples of a process do not name the functions a
// test expects, with how many samples and a few of their stacks.
type miss struct {
	reason    string
	agentMiss bool // the agent failed to name what it could have
	samples   int64
	examples  []string
}

// missesByReason sorts the samples keep selects that name none of fns by
// why, judged from their innermost user frame: no user stack at all, an
// address in no mapping the agent knew (the process's mappings were not
// read in time), a mapped address the file's symbols do not name, or code
// that really ran elsewhere (the dynamic loader and libc at start and
// exit, the vDSO), named by its file.
func missesByReason(ps []pushed, keep func(*profile.Sample) bool, fns ...string) []*miss {
	byReason := map[string]*miss{}
	for _, p := range ps {
		for _, s := range p.prof.Sample {
			if keep != nil && !keep(s) || sampleNames(s, fns) {
				continue
			}
			r, agentMiss := missReason(s)
			m := byReason[r]
			if m == nil {
				m = &miss{reason: r, agentMiss: agentMiss}
				byReason[r] = m
			}
			m.samples += s.Value[0]
			if len(m.examples) < 3 {
				m.examples = append(m.examples, stackString(s))
			}
		}
	}
	out := make([]*miss, 0, len(byReason))
	for _, m := range byReason {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].samples > out[j].samples })
	return out
}

func logMisses(t *testing.T, ms []*miss) {
	t.Helper()
	for _, m := range ms {
		what := "not named"
		if m.agentMiss {
			what = "not named (the agent's miss)"
		}
		t.Logf("  %s, %s: %d samples, e.g.\n    %s", what, m.reason, m.samples, strings.Join(m.examples, "\n    "))
	}
}

func sampleNames(s *profile.Sample, fns []string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function != nil && slices.Contains(fns, ln.Function.Name) {
				return true
			}
		}
	}
	return false
}

// missReason says why a sample names none of the expected functions, from
// its innermost user-space frame, and whether that is the agent's failure
// (an address it could have named and did not) rather than time that
// really went elsewhere.
func missReason(s *profile.Sample) (reason string, agentMiss bool) {
	for _, l := range s.Location {
		if l.Mapping != nil && l.Mapping.File == "[kernel.kallsyms]" {
			continue
		}
		name := ""
		if len(l.Line) > 0 && l.Line[0].Function != nil {
			name = l.Line[0].Function.Name
		}
		switch {
		case inExec(s):
			// The kernel was replacing the process's image: the user
			// address is the old program's, in no mapping of the new.
			return "in execve (the user address is the old image's)", false
		case name == "[kernel stack lost]":
			continue
		case name == "[unknown]" && l.Mapping == nil:
			return "address in no known mapping", true
		case l.Mapping == nil:
			return "no user stack: " + name, true
		case strings.Contains(name, "+0x"):
			return "not symbolized in " + path.Base(l.Mapping.File), true
		default:
			return "ran in " + path.Base(l.Mapping.File), false
		}
	}
	return "kernel only (start or exit)", false
}

// inExec says whether the kernel stack of s is in execve.
func inExec(s *profile.Sample) bool {
	for _, l := range s.Location {
		if l.Mapping == nil || l.Mapping.File != "[kernel.kallsyms]" {
			continue
		}
		for _, ln := range l.Line {
			if ln.Function != nil && strings.Contains(ln.Function.Name, "execve") {
				return true
			}
		}
	}
	return false
}

func stackString(s *profile.Sample) string {
	var fr []string
	for _, l := range s.Location {
		name := "?"
		if len(l.Line) > 0 && l.Line[0].Function != nil {
			name = l.Line[0].Function.Name
		}
		fr = append(fr, name)
	}
	return strings.Join(fr, " <- ")
}
