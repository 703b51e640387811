package unwinderbench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// The in-kernel cost of one sample: Scorch's sampling program runs on a
// workload spinning at a chosen call depth, and the program's run time
// (kernel BPF statistics) is divided by its runs.
//
//	go test -run='^$' -bench=SampleCost -benchtime=1x ./bench/unwinder/
//
// Metrics: ns/sample is the program's mean run time for a sample of the
// workload; frames is the mean number of user frames recorded. Samples of
// other processes, which the pid filter rejects, are measured separately
// ("filtered") and subtracted.

var (
	depthOnce sync.Once
	depthBins map[string]string
	depthErr  error
)

// depthBinaries builds depth/depth.c with and without frame pointers.
func depthBinaries(b *testing.B) map[string]string {
	gcc := testenv.RequireTool(b, "gcc")
	depthOnce.Do(func() {
		dir, err := os.MkdirTemp("", "unwinder-depth")
		if err != nil {
			depthErr = err
			return
		}
		depthBins = map[string]string{}
		for name, flag := range map[string]string{"fp": "-fno-omit-frame-pointer", "nofp": "-fomit-frame-pointer"} {
			out := filepath.Join(dir, "depth-"+name)
			if b, err := exec.Command(gcc, "-O2", "-g", flag, "-o", out, filepath.Join("depth", "depth.c")).CombinedOutput(); err != nil {
				depthErr = fmt.Errorf("gcc %s: %v\n%s", flag, err, b)
				return
			}
			depthBins[name] = out
		}
	})
	if depthErr != nil {
		b.Fatal(depthErr)
	}
	return depthBins
}

func start(b *testing.B, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// measurement is what one sampling run of a workload cost.
type measurement struct {
	runTime           time.Duration
	runs, filtered    uint64
	samples, frames   uint64 // workload samples drained, their user frames
	unwound, complete uint64
	cost              sampler.Cost
}

// measure samples pid for d and returns the program's statistics deltas.
func measure(b *testing.B, opts sampler.Options, pid int, d time.Duration) measurement {
	opts.Pids = []uint32{uint32(pid)}
	opts.Frequency = 999
	s, err := sampler.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Drain()
	c0, err := s.Cost()
	if err != nil {
		b.Fatal(err)
	}
	st0, _ := s.Stats()
	var m measurement
	for end := time.Now().Add(d); time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		smp, _, err := s.Drain()
		if err != nil {
			b.Fatal(err)
		}
		for _, x := range smp {
			if x.Pid != uint32(pid) {
				continue
			}
			m.samples += x.Count
			m.frames += x.Count * uint64(len(x.User))
			if !x.UserTruncated {
				m.complete += x.Count
			}
		}
	}
	c1, err := s.Cost()
	if err != nil {
		b.Fatal(err)
	}
	st1, _ := s.Stats()
	m.runTime = c1.RunTime - c0.RunTime
	m.runs = c1.Runs - c0.Runs
	m.filtered = st1.Filtered - st0.Filtered
	m.unwound = st1.Unwound - st0.Unwound
	m.cost = c1
	return m
}

func BenchmarkSampleCost(b *testing.B) {
	testenv.RequireRoot(b)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run time statistics: %v", err)
	}
	defer stats.Close()
	bins := depthBinaries(b)

	// The cost of a sample the pid filter rejects: sample a sleeping
	// process while a busy one runs.
	var filteredNS float64
	b.Run("filtered", func(b *testing.B) {
		start(b, bins["nofp"], "10", "60") // keeps a CPU busy
		idle := start(b, "sleep", "60")
		var rt time.Duration
		var runs uint64
		for b.Loop() {
			m := measure(b, sampler.Options{}, idle.Process.Pid, 2*time.Second)
			rt += m.runTime
			runs += m.runs
		}
		if runs == 0 {
			b.Fatal("the program did not run")
		}
		filteredNS = float64(rt.Nanoseconds()) / float64(runs)
		b.ReportMetric(filteredNS, "ns/sample")
	})

	for _, c := range []struct {
		name   string
		bin    string
		fpOnly bool
		depth  int
	}{
		{"frame-pointers/depth=10", "fp", true, 10},
		{"frame-pointers/depth=100", "fp", true, 100},
		{"tables/depth=10", "nofp", false, 10},
		{"tables/depth=100", "nofp", false, 100},
		{"tables-on-fp-binary/depth=100", "fp", false, 100},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := start(b, bins[c.bin], fmt.Sprint(c.depth), "60")
			time.Sleep(200 * time.Millisecond)
			var total measurement
			for b.Loop() {
				m := measure(b, sampler.Options{FramePointersOnly: c.fpOnly}, w.Process.Pid, 3*time.Second)
				total.runTime += m.runTime
				total.runs += m.runs
				total.filtered += m.filtered
				total.samples += m.samples
				total.frames += m.frames
				total.unwound += m.unwound
				total.complete += m.complete
				total.cost = m.cost
			}
			own := total.runs - total.filtered
			if own == 0 || total.samples == 0 {
				b.Fatalf("no sample of the workload: %+v", total)
			}
			ns := (float64(total.runTime.Nanoseconds()) - filteredNS*float64(total.filtered)) / float64(own)
			b.ReportMetric(ns, "ns/sample")
			b.ReportMetric(float64(total.frames)/float64(total.samples), "frames")
			b.ReportMetric(float64(own), "samples")
			if !c.fpOnly && total.unwound == 0 {
				b.Errorf("no stack was walked with tables")
			}
			if c.depth == 100 && c.bin == "nofp" || c.depth == 100 && c.fpOnly {
				logMaps(b, total.cost)
			}
		})
	}
}

// logMaps logs the kernel memory of each map.
func logMaps(b *testing.B, c sampler.Cost) {
	names := make([]string, 0, len(c.MapBytes))
	var sum uint64
	for n, v := range c.MapBytes {
		names = append(names, n)
		sum += v
	}
	sort.Strings(names)
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "%s %.2f MiB; ", n, float64(c.MapBytes[n])/(1<<20))
	}
	b.Logf("map memory (memlock): %stotal %.1f MiB", sb.String(), float64(sum)/(1<<20))
}
