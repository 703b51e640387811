package reliability

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// The field tests run `scorch record` system-wide, as a user would, and
// start the workloads only after it began: the unwind tables of processes
// it has never seen must be in place from their first samples. Each
// workload (testdata/field-*) splits the work of one frameless leaf,
// hot_inner, between two callers by construction: hot_middle makes three
// calls of it per round and cold_path one, so among the samples in
// hot_inner hot_middle holds exactly 75% and cold_path 25%, however the
// process is scheduled. A walk that loses the leaf's caller (frame
// pointers over a frameless leaf skip it) or stops early moves samples out
// of both.

// fieldWorkload is one build of the 75/25 workload.
type fieldWorkload struct {
	name string // of testdata/bin/NAME, and so its comm
	isGo bool
}

var fieldWorkloads = []fieldWorkload{
	{name: "field-c"},    // gcc defaults: -O2, no frame pointers
	{name: "field-c-fp"}, // -O2 -fno-omit-frame-pointer (the leaf frameless)
	{name: "field-cpp"},  // -O2
	{name: "field-rust"}, // cargo --release
	{name: "field-go", isGo: true},
}

const (
	fieldFrequency = 999
	// fieldSeconds is each workload's run, and the streams'. On the busy
	// host a workload gets about a sixth of a CPU, some 3,000 samples in
	// 20 s: the 3-point bound on a 75% share is then 4 binomial standard
	// deviations (in 7 s, 2.3: one phase in ten failed by chance).
	fieldSeconds = 20
	// badFrameBound is the share of a workload's samples that may hold a
	// frame marking a failed walk ([truncated], [unknown caller],
	// [unknown], an unnamed address); it is also the share of hot_inner's
	// samples that may fail to reach main (and _start or runtime.main).
	badFrameBound = 0.005
	// startReachBound is the share of field-c's user stacks that must
	// reach _start (issue 14, item 5: stacks of a program built with gcc's
	// defaults were cut short when its hot loop made no libc calls).
	startReachBound = 0.99
	// oraclePoints is how far Scorch's share of hot_middle may stray from
	// runtime/pprof's, when the two sample counts are large enough that
	// the binomial scatter of their difference is smaller (see
	// oracleBound).
	oraclePoints  = 0.02
	oracleSeconds = 20
)

// TestFieldShares records the host with `scorch record` while the 75/25
// workloads run, five ways: started after the recording on a quiet host,
// on a busy one (a CPU-bound loop on every CPU and a stream of
// short-lived processes throughout), and as streams of 50 ms processes on
// the busy host; and started before the recording, on a quiet host and on
// a busy one. For each workload, among
// its samples in hot_inner: hot_middle's share within 3 points of 75%
// (5 for the streams) and of the binomial bound of the count, cold_path's
// likewise of 25%; frames marking a failed walk on under 0.5% of its
// samples; hot_inner's stacks reach main (and _start, or runtime.main for
// Go); and field-c's user stacks reach _start (>= 99%) when it runs as one
// process (a 50 ms process spends a few percent of its samples in the
// dynamic loader, whose entry point is not named _start).
//
// It is the acceptance test of issue 14, and runs whole in `make test`.
// The stream phase is the hardest: a 50 ms process spends a tenth of its
// life in the dynamic loader and in its libraries' constructors and
// destructors (gcc's crtstuff code, which has no CFI: see
// unwinder.gapCode), its events are often read after it has exited (its
// frames are then named through the kernel's list of its mappings and the
// last read of its maps, perhaps the unwind-table worker's), its
// tables must come from files other processes mapped before, and its first
// samples are deferred to user space while the table of a program new to
// the host is built. With two more compile loops beside the test's own
// load, it passed 4 runs of 4 (worst workload 0.32% of bad frames, bound
// 0.5%). When frames of libraries mapped after the symbolizer's read
// (field-cpp's libstdc++) were named only through the kernel's list, which
// lacks those walked in user space, field-cpp had 0.73-0.81% (CI and 3
// runs here); with the last read, 0.08-0.24% (3 runs). In the busy-before
// phase, a deferred sample of a program running before the recording was
// finished as soon as its leaf's table was in, while the C library's above
// it was still being built: its walk stopped there, and the kernel's
// (the leaf alone) stood. 0.77-0.97% (CI) and 0.35-0.65% (here) then; now
// such a sample waits for the file its walk stops in, 0.16-0.27% (4 runs);
// CI still failed once at 0.64% (field-rust): the sample's mappings came
// from the kernel's list, which lacked the C library above main, so the
// walk stopped there without waiting. The worker reads the maps again for
// a PC the list lacks: worst workload 0.00-0.21% (4 runs of the phase), and
// at most 0.07% in any phase of a run of all five.
func TestFieldShares(t *testing.T) {
	requireRoot(t)
	bins := map[string]string{}
	for _, w := range fieldWorkloads {
		bins[w.name] = workload(t, w.name)
	}
	for _, phase := range []struct {
		name         string
		busy, stream bool
		before       bool // the workloads start before the recording
		points       float64
	}{
		{"quiet", false, false, false, 0.03},
		{"busy", true, false, false, 0.03},
		{"stream", true, true, false, 0.05},
		{"quiet-before", false, false, true, 0.03},
		{"busy-before", true, false, true, 0.03},
	} {
		t.Run(phase.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var load *busyLoad
			if phase.busy {
				load = startBusyLoad(ctx, t)
			}
			var rec *recordProc
			if !phase.before {
				rec = startRecord(t)
				time.Sleep(1500 * time.Millisecond) // the workloads start well after the recording
			}
			var started atomic.Int64
			var wg sync.WaitGroup
			for _, w := range fieldWorkloads {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if !phase.stream {
						secs := fieldSeconds
						if phase.before {
							secs += 2 // as many seconds recorded as the others
						}
						cmd := exec.Command(bins[w.name], fmt.Sprint(secs))
						if out, err := cmd.CombinedOutput(); err != nil {
							t.Errorf("%s: %v\n%s", w.name, err, out)
						}
						started.Add(1)
						return
					}
					for end := time.Now().Add(fieldSeconds * time.Second); time.Now().Before(end); {
						if out, err := exec.Command(bins[w.name], "0.05").CombinedOutput(); err != nil {
							t.Errorf("%s: %v\n%s", w.name, err, out)
							return
						}
						started.Add(1)
					}
				}()
			}
			if phase.before {
				// The workloads run (their tables unknown to a recorder that
				// was not there when they started) before the recording
				// begins: it must find them in its scan of the host. (If it
				// fails to start, the workloads are waited for before the
				// test ends: they report to t.)
				defer wg.Wait()
				time.Sleep(1500 * time.Millisecond)
				rec = startRecord(t)
			}
			wg.Wait()
			p := rec.stop()
			if load != nil {
				load.stop()
			}
			t.Logf("%s: %d workload processes; %s", phase.name, started.Load(), load)
			for _, w := range fieldWorkloads {
				t.Run(w.name, func(t *testing.T) {
					checkField(t, p, w, phase.points, !phase.stream)
				})
			}
		})
	}
}

// TestFieldGoOracle runs the stripped Go workload (two goroutines, for
// oracleSeconds) with Go's own CPU profiler on while `scorch record`
// samples the host: hot_middle's share among hot_inner's samples by Scorch
// must be within oracleBound of runtime/pprof's: 2 points, or 4 standard
// deviations of the difference of two binomial shares when the counts are
// too small for 2. runtime/pprof asks for 1000 Hz but the kernel fires
// CPU-time timers at most once a tick (CONFIG_HZ, often 250), so it gets
// about 250 samples per CPU-second to Scorch's 999: 2 points needs some 40
// CPU-seconds of the workload, which a free 2-CPU host gives.
func TestFieldGoOracle(t *testing.T) {
	requireRoot(t)
	bin := workload(t, "field-go")
	pp := filepath.Join(t.TempDir(), "go.pprof")
	rec := startRecord(t)
	time.Sleep(time.Second)
	cmd := exec.Command(bin, fmt.Sprint(oracleSeconds))
	cmd.Env = append(os.Environ(), "SCORCH_FIELD_PPROF="+pp, "SCORCH_FIELD_WORKERS=2")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("field-go: %v\n%s", err, out)
	}
	p := rec.stop()
	f, err := os.Open(pp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gp, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("field-go's runtime/pprof profile: %v", err)
	}
	g := fieldCount(gp, nil, true)
	s := fieldCount(p, commIs("field-go"), true)
	if g.inner == 0 || s.inner == 0 {
		t.Fatalf("no samples in hot_inner: runtime/pprof %d, Scorch %d", g.inner, s.inner)
	}
	gs, ss := float64(g.middle)/float64(g.inner), float64(s.middle)/float64(s.inner)
	bound := oracleBound(g.inner, s.inner)
	t.Logf("hot_middle's share of hot_inner: runtime/pprof %.2f%% of %d samples (cold_path %.2f%%), Scorch %.2f%% of %d (cold_path %.2f%%); difference %.2f points, bound %.2f points",
		100*gs, g.inner, 100*float64(g.cold)/float64(g.inner), 100*ss, s.inner, 100*float64(s.cold)/float64(s.inner), 100*math.Abs(gs-ss), 100*bound)
	if math.Abs(gs-ss) > bound {
		t.Errorf("Scorch's hot_middle share %.2f%% (%d of %d) differs from runtime/pprof's %.2f%% (%d of %d) by %.2f points, bound %.2f\n%s",
			100*ss, s.middle, s.inner, 100*gs, g.middle, g.inner, 100*math.Abs(gs-ss), 100*bound, s.examples())
	}
}

// oracleBound is how far apart two measured shares of an expected 75% may
// be: oraclePoints, or testenv.Sigmas standard deviations of the
// difference of two binomial shares from n1 and n2 samples when that is
// wider.
func oracleBound(n1, n2 int64) float64 {
	sd := math.Sqrt(0.75 * 0.25 * (1/float64(n1) + 1/float64(n2)))
	return max(oraclePoints, testenv.Sigmas*sd)
}

// checkField judges one workload's samples in p; steady says it ran as one
// long process (whose start-up is a negligible share of its samples).
func checkField(t *testing.T, p *profile.Profile, w fieldWorkload, points float64, steady bool) {
	c := fieldCount(p, commIs(w.name), w.isGo)
	t.Logf("%s: %d samples (%d in execve left out); hot_inner %d: hot_middle %.2f%%, cold_path %.2f%%, neither %d; bad frames on %d (%.2f%%); hot_inner's stacks not reaching main %d; user stacks reaching _start %d of %d",
		w.name, c.all, c.exec, c.inner, c.pct(c.middle), c.pct(c.cold), c.inner-c.middle-c.cold+c.both,
		c.bad, 100*float64(c.bad)/float64(max(c.all, 1)), c.unreached, c.start, c.user)
	if c.inner < 100 {
		t.Fatalf("only %d samples in hot_inner (of %d of %s)\n%s", c.inner, c.all, w.name, c.examples())
	}
	for _, sh := range []struct {
		caller string
		hit    int64
		want   float64
	}{{"hot_middle", c.middle, 0.75}, {"cold_path", c.cold, 0.25}} {
		what := fmt.Sprintf("%s: %s's share of hot_inner", w.name, sh.caller)
		got := float64(sh.hit) / float64(c.inner)
		testenv.CheckShare(t, what, sh.hit, c.inner, sh.want, 0)
		if math.Abs(got-sh.want) > points {
			t.Errorf("%s: %d of %d samples (%.2f%%), want within %.0f points of %.0f%%", what, sh.hit, c.inner, 100*got, 100*points, 100*sh.want)
		}
	}
	if float64(c.bad) > badFrameBound*float64(c.all) {
		t.Errorf("%s: %d of %d samples (%.2f%%) hold a frame marking a failed walk, want under %.1f%%",
			w.name, c.bad, c.all, 100*float64(c.bad)/float64(c.all), 100*badFrameBound)
	}
	if float64(c.unreached) > badFrameBound*float64(c.inner) {
		want := "main and _start"
		if w.isGo {
			want = "main.main and runtime.main"
		}
		t.Errorf("%s: %d of %d stacks in hot_inner (%.2f%%) do not reach %s, want under %.1f%%",
			w.name, c.unreached, c.inner, 100*float64(c.unreached)/float64(c.inner), want, 100*badFrameBound)
	}
	if w.name == "field-c" && steady && float64(c.start) < startReachBound*float64(c.user) {
		t.Errorf("%s: %d of %d user stacks (%.2f%%) reach _start, want >= %.0f%%",
			w.name, c.start, c.user, 100*float64(c.start)/float64(max(c.user, 1)), 100*startReachBound)
	}
	if t.Failed() {
		t.Logf("%s: the offending samples:\n%s", w.name, c.examples())
	}
}

// fieldCounts are the samples of one workload, by what their stacks hold.
type fieldCounts struct {
	all    int64 // samples of the workload, execve's left out
	exec   int64 // in execve: the user stack is the old image's
	inner  int64 // holding hot_inner
	middle int64 // hot_inner and hot_middle
	cold   int64 // hot_inner and cold_path
	both   int64 // hot_inner, hot_middle and cold_path (a wrong walk)
	bad    int64 // holding a frame that marks a failed walk
	// unreached: in hot_inner, not reaching main and _start (main.main
	// and runtime.main for Go).
	unreached int64
	user      int64 // with a user stack
	start     int64 // with a user stack whose outermost frame is _start

	offending map[string]*offense // by kind, for the failure messages
}

type offense struct {
	samples int64
	stacks  map[string]int64
}

func (c *fieldCounts) pct(n int64) float64 { return 100 * float64(n) / float64(max(c.inner, 1)) }

func (c *fieldCounts) offend(kind string, s *profile.Sample, stack string) {
	o := c.offending[kind]
	if o == nil {
		o = &offense{stacks: map[string]int64{}}
		c.offending[kind] = o
	}
	o.samples += s.Value[0]
	o.stacks[stack] += s.Value[0]
}

// examples shows the most frequent offending stacks of each kind.
func (c *fieldCounts) examples() string {
	kinds := make([]string, 0, len(c.offending))
	for k := range c.offending {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		o := c.offending[k]
		fmt.Fprintf(&b, "  %s: %d samples, e.g. (innermost first)\n", k, o.samples)
		stacks := make([]string, 0, len(o.stacks))
		for st := range o.stacks {
			stacks = append(stacks, st)
		}
		sort.Slice(stacks, func(i, j int) bool { return o.stacks[stacks[i]] > o.stacks[stacks[j]] })
		for _, st := range stacks[:min(len(stacks), 4)] {
			fmt.Fprintf(&b, "    %5d  %s\n", o.stacks[st], st)
		}
	}
	return b.String()
}

// fieldCount counts the samples keep selects (all when nil) of a 75/25
// workload.
func fieldCount(p *profile.Profile, keep func(*profile.Sample) bool, isGo bool) fieldCounts {
	c := fieldCounts{offending: map[string]*offense{}}
	for _, s := range p.Sample {
		if keep != nil && !keep(s) {
			continue
		}
		n := s.Value[0]
		if inExec(s) {
			c.exec += n
			continue
		}
		c.all += n
		names, user := sampleFrames(s)
		stack := strings.Join(names, " <- ")
		var inner, middle, cold, bad, userMain, goMain, runtimeMain bool
		for _, fn := range names {
			switch short := shortName(fn); {
			case short == "hot_inner":
				inner = true
			case short == "hot_middle":
				middle = true
			case short == "cold_path":
				cold = true
			case fn == "[truncated]" || fn == "[unknown caller]" || fn == "[unknown]" || strings.HasPrefix(fn, "0x"):
				bad = true
			case fn == "main":
				userMain = true
			case fn == "main.main":
				goMain = true
			case fn == "runtime.main":
				runtimeMain = true
			}
		}
		if bad {
			c.bad += n
			c.offend("a frame marking a failed walk", s, stack)
		}
		if len(user) > 0 {
			c.user += n
			if user[len(user)-1] == "_start" {
				c.start += n
			} else if !isGo {
				c.offend("user stack not reaching _start", s, stack)
			}
		}
		if !inner {
			continue
		}
		c.inner += n
		switch {
		case middle && cold:
			c.both += n
			c.middle += n
			c.cold += n
			c.offend("hot_inner under both callers", s, stack)
		case middle:
			c.middle += n
		case cold:
			c.cold += n
		default:
			c.offend("hot_inner under neither caller", s, stack)
		}
		reached := userMain && len(user) > 0 && user[len(user)-1] == "_start"
		if isGo {
			reached = goMain && runtimeMain
		}
		if !reached {
			c.unreached += n
			c.offend("hot_inner's stack not reaching main", s, stack)
		}
	}
	return c
}

// sampleFrames names the frames of s, innermost first (inlined ones
// included), and those of its user stack: the frames outside the kernel's
// mapping, pseudo frames included.
func sampleFrames(s *profile.Sample) (all, user []string) {
	for _, l := range s.Location {
		kernel := l.Mapping != nil && l.Mapping.File == "[kernel.kallsyms]"
		for _, ln := range l.Line {
			name := "?"
			if ln.Function != nil {
				name = ln.Function.Name
			}
			all = append(all, name)
			if !kernel && name != "[kernel stack lost]" {
				user = append(user, name)
			}
		}
	}
	return all, user
}

// shortName is a function's name without its package, namespace or
// parameters: field::hot_inner(unsigned long, int), field_rust::hot_inner
// and main.hot_inner are all hot_inner.
func shortName(fn string) string {
	if i := strings.IndexByte(fn, '('); i > 0 {
		fn = fn[:i]
	}
	if i := strings.LastIndex(fn, "::"); i >= 0 {
		fn = fn[i+2:]
	}
	if i := strings.LastIndexByte(fn, '.'); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
}

// recordProc is a running `scorch record`, system-wide.
type recordProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    string
	stderr *logBuffer
	done   chan error
}

// startRecord starts `scorch record` on every process at fieldFrequency
// and waits until it samples.
func startRecord(t *testing.T) *recordProc {
	t.Helper()
	out := filepath.Join(t.TempDir(), "field.pb.gz")
	cmd := exec.Command(scorchBin, "record", "--output", out, "--top", "0", "--duration", "10m",
		"--frequency", fmt.Sprint(fieldFrequency), "--log-level", "info")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &recordProc{t: t, cmd: cmd, out: out, stderr: &logBuffer{}, done: make(chan error, 1)}
	sampling := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			r.stderr.add(sc.Bytes())
			if strings.HasPrefix(sc.Text(), "scorch: sampling") {
				once.Do(func() { close(sampling) })
			}
		}
		r.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case err := <-r.done:
			r.done <- err
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case <-sampling:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("scorch record exited before sampling: %v\n%s", err, r.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("scorch record not sampling after 60s:\n%s", r.stderr)
	}
	return r
}

// stop ends the recording as Ctrl-C does and returns the profile written.
func (r *recordProc) stop() *profile.Profile {
	r.t.Helper()
	r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			r.t.Fatalf("scorch record: %v\n%s", err, r.stderr)
		}
	case <-time.After(2 * time.Minute):
		r.t.Fatalf("scorch record not done 2 minutes after SIGINT:\n%s", r.stderr)
	}
	r.t.Logf("scorch record: %s", strings.TrimSpace(r.stderr.String()))
	f, err := os.Open(r.out)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		r.t.Fatalf("%s: %v", r.out, err)
	}
	return p
}

// busyLoad keeps every CPU busy and starts short-lived processes
// (/bin/true) as fast as a few goroutines can, until stopped.
type busyLoad struct {
	hogs    []*exec.Cmd
	spawned atomic.Int64
	start   time.Time
	elapsed time.Duration
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

const spawners = 3

func startBusyLoad(ctx context.Context, t *testing.T) *busyLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	l := &busyLoad{start: time.Now(), cancel: cancel}
	for range runtime.NumCPU() {
		l.hogs = append(l.hogs, testenv.Start(t, "/bin/sh", "-c", "while :; do :; done"))
	}
	for range spawners {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				if exec.Command("/bin/true").Run() == nil {
					l.spawned.Add(1)
				}
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

func (l *busyLoad) stop() {
	if l.elapsed != 0 {
		return
	}
	l.cancel()
	l.wg.Wait()
	for _, h := range l.hogs {
		h.Process.Kill()
	}
	l.elapsed = time.Since(l.start)
}

func (l *busyLoad) String() string {
	if l == nil {
		return "quiet host"
	}
	return fmt.Sprintf("busy host: %d CPU-bound loops, %d short-lived processes in %s (%.0f/s)",
		len(l.hogs), l.spawned.Load(), l.elapsed.Round(time.Millisecond), float64(l.spawned.Load())/l.elapsed.Seconds())
}
