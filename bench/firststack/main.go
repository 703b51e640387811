// Command firststack measures how long after its exec a new process gets
// its first complete user stack from the table walk (issue 14). Run by
// bench/run.sh (part "firststack"); by hand, as root, after `make testdata`:
//
//	go run ./bench/firststack -n 50 -o out.tsv testdata/bin/nofp-c
//
// It opens internal/sampler on every CPU (-frequency, 999 Hz), reads its
// events (which feeds the unwind table worker, as the agent does), and
// drains it every -drain (10 ms). Meanwhile it starts -n processes one
// after another, cycling through the binaries given as arguments, each
// run as BINARY SECONDS (-run, 0.3 s; testdata/bin/nofp-c takes its run
// time as argv[1]), -gap apart. A sample of one of them is complete when
// the walk reached the outermost frame: not Sample.UserTruncated, not
// Sample.UserCallerUnknown, not UserLost, at least 3 frames, and the
// outermost address is a return address in the executable's _start (the
// binaries must be ELF files with a _start symbol, built without frame
// pointers so that only the tables complete their stacks).
//
// Samples carry no time stamp: a sample is known only by the drain that
// returns it, so a process's latency is taken as (start of the first drain
// returning a complete sample of it) − (its exec), an upper bound; the
// sample was taken after the previous drain began. The resolution is the
// drain interval plus the drain's own time (both reported). Exec is the
// moment exec.Cmd.Start returned (it returns once the child's execve
// succeeded), so the latency includes nothing of the fork.
//
// Output: one row per process in -o (tab-separated, with a header), and a
// summary on stdout.
package main

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scorch-profiler/scorch/internal/sampler"
)

func main() {
	n := flag.Int("n", 50, "processes to start")
	run := flag.Float64("run", 0.3, "seconds each process runs (its argv[1])")
	gap := flag.Duration("gap", 50*time.Millisecond, "pause between one process's exit and the next start")
	freq := flag.Int("frequency", 999, "sampling frequency per CPU, Hz")
	drainEvery := flag.Duration("drain", 10*time.Millisecond, "drain interval")
	out := flag.String("o", "", "per-process rows (TSV); none when empty")
	label := flag.String("label", "", "label written in every row and the summary (e.g. quiet, busy)")
	flag.Parse()
	if flag.NArg() == 0 || *n <= 0 {
		fmt.Fprintln(os.Stderr, "usage: firststack [flags] BINARY...")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if err := measure(*n, *run, *gap, *freq, *drainEvery, *out, *label, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "firststack:", err)
		os.Exit(1)
	}
}

// binary is one workload executable: where its _start lies, as ELF
// virtual addresses, and how file offsets map to them.
type binary struct {
	path       string
	start, end uint64 // _start
	loads      []elf.ProgHeader
}

func openBinary(path string) (*binary, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.Open(abs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%s: symbols: %w", path, err)
	}
	b := &binary{path: abs}
	for _, s := range syms {
		if s.Name == "_start" {
			b.start, b.end = s.Value, s.Value+max(s.Size, 1)
		}
	}
	if b.start == 0 {
		return nil, fmt.Errorf("%s: no _start symbol", path)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			b.loads = append(b.loads, p.ProgHeader)
		}
	}
	return b, nil
}

// mapping is one line of /proc/PID/maps that maps the binary.
type mapping struct{ start, end, off uint64 }

// readMappings returns the mappings of path in process pid.
func readMappings(pid int, path string) ([]mapping, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ms []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[5] != path {
			continue
		}
		lo, hi, ok := strings.Cut(fs[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		o, err3 := strconv.ParseUint(fs[2], 16, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("/proc/%d/maps: %q: %w", pid, sc.Text(), err)
		}
		ms = append(ms, mapping{s, e, o})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("/proc/%d/maps: %s not mapped", pid, path)
	}
	return ms, nil
}

// inStart reports whether the run-time address addr, a return address, is
// in the binary's _start in a process with mappings ms.
func (b *binary) inStart(ms []mapping, addr uint64) bool {
	a := addr - 1 // a return address: the call is before it
	for _, m := range ms {
		if a < m.start || a >= m.end {
			continue
		}
		off := a - m.start + m.off
		for _, p := range b.loads {
			if off >= p.Off && off < p.Off+p.Filesz {
				v := off - p.Off + p.Vaddr
				return v >= b.start && v < b.end
			}
		}
	}
	return false
}

// proc is one started process.
type proc struct {
	pid  int
	bin  *binary
	exec time.Time // Start returned
	maps []mapping
	err  error
}

// seen is what one drain returned for one pid.
type seen struct {
	drain              time.Time
	outermost          uint64
	frames             int
	truncated, unknown bool
	lost               bool
	count              uint64
	completeCandidate  bool // all but the _start test, made once the process's maps are known
}

func measure(n int, run float64, gap time.Duration, freq int, drainEvery time.Duration, outPath, label string, paths []string) error {
	var bins []*binary
	for _, p := range paths {
		b, err := openBinary(p)
		if err != nil {
			return err
		}
		bins = append(bins, b)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := sampler.Open(sampler.Options{Frequency: freq, DropIdle: true, Logger: log})
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Program != sampler.ProgramTables {
		return fmt.Errorf("sampler loaded program %q, not the table walk: nothing to measure", s.Program)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.ReadEvents(ctx, func(sampler.Event) {}); err != nil && !errors.Is(err, context.Canceled) {
			log.Warn("read events", "err", err)
		}
	}()

	// The drain loop: every sample, by pid, with the time its drain began.
	var (
		mu        sync.Mutex
		byPid     = map[uint32][]seen{}
		drainDurs []time.Duration
		intervals []time.Duration
		drainErr  error
	)
	stopDrain := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		tick := time.NewTicker(drainEvery)
		defer tick.Stop()
		var prev time.Time
		for {
			select {
			case <-stopDrain:
				return
			case <-tick.C:
			}
			t := time.Now()
			samples, _, err := s.Drain()
			d := time.Since(t)
			mu.Lock()
			if err != nil {
				drainErr = err
				mu.Unlock()
				return
			}
			drainDurs = append(drainDurs, d)
			if !prev.IsZero() {
				intervals = append(intervals, t.Sub(prev))
			}
			prev = t
			for _, x := range samples {
				if len(x.User) == 0 && !x.UserLost {
					continue
				}
				sn := seen{drain: t, frames: len(x.User), truncated: x.UserTruncated, unknown: x.UserCallerUnknown, lost: x.UserLost, count: x.Count}
				if len(x.User) > 0 {
					sn.outermost = x.User[len(x.User)-1]
				}
				sn.completeCandidate = !sn.truncated && !sn.unknown && !sn.lost && sn.frames >= 3
				byPid[x.Pid] = append(byPid[x.Pid], sn)
			}
			mu.Unlock()
		}
	}()

	time.Sleep(time.Second) // past the sampler's start-up (tables of running processes)
	st0, err := s.Stats()
	if err != nil {
		cancel()
		return err
	}
	arg := strconv.FormatFloat(run, 'f', -1, 64)
	var procs []*proc
	for i := range n {
		b := bins[i%len(bins)]
		cmd := exec.Command(b.path, arg)
		if err := cmd.Start(); err != nil {
			cancel()
			return fmt.Errorf("start %s: %w", b.path, err)
		}
		p := &proc{pid: cmd.Process.Pid, bin: b, exec: time.Now()}
		// Start returns once the child's exec is past its point of no
		// return (the close-on-exec pipe closes in begin_new_exec), which
		// can be before the kernel has mapped the new program: read until
		// it has.
		for deadline := time.Now().Add(200 * time.Millisecond); ; time.Sleep(time.Millisecond) {
			p.maps, p.err = readMappings(p.pid, b.path)
			if p.err == nil || time.Now().After(deadline) {
				break
			}
		}
		procs = append(procs, p)
		if err := cmd.Wait(); err != nil {
			p.err = errors.Join(p.err, fmt.Errorf("%s: %w", b.path, err))
		}
		time.Sleep(gap)
	}
	time.Sleep(3 * drainEvery) // the last samples
	st1, err := s.Stats()
	if err != nil {
		cancel()
		return err
	}
	tst := s.TableStats()
	close(stopDrain)
	<-drained
	cancel()
	wg.Wait()
	if drainErr != nil {
		return fmt.Errorf("drain: %w", drainErr)
	}

	// One row per process.
	type row struct {
		p                        *proc
		first, firstComplete     time.Duration // -1 if none
		samples, complete, trunc uint64
		unknown, short, notStart uint64
	}
	var rows []row
	var lat []float64
	missing := 0
	for _, p := range procs {
		r := row{p: p, first: -1, firstComplete: -1}
		for _, sn := range byPid[uint32(p.pid)] {
			if sn.drain.Before(p.exec.Add(-drainEvery)) {
				continue // a reused pid, or the child before its exec
			}
			if r.first < 0 {
				r.first = sn.drain.Sub(p.exec)
			}
			r.samples += sn.count
			complete := sn.completeCandidate && p.maps != nil && p.bin.inStart(p.maps, sn.outermost)
			switch {
			case complete:
				r.complete += sn.count
				if r.firstComplete < 0 {
					r.firstComplete = sn.drain.Sub(p.exec)
				}
			case sn.truncated:
				r.trunc += sn.count
			case sn.unknown:
				r.unknown += sn.count
			case sn.frames < 3:
				r.short += sn.count
			default:
				r.notStart += sn.count
			}
		}
		if r.firstComplete >= 0 {
			lat = append(lat, r.firstComplete.Seconds()*1000)
		} else {
			missing++
		}
		rows = append(rows, r)
	}

	if outPath != "" {
		f, err := os.Create(outPath)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		fmt.Fprintln(w, "label\tindex\tpid\tbinary\tfirst_sample_ms\tfirst_complete_ms\tsamples\tcomplete\ttruncated\tcaller_unknown\tunder_3_frames\tnot_reaching_start\terror")
		for i, r := range rows {
			errs := ""
			if r.p.err != nil {
				errs = strings.ReplaceAll(r.p.err.Error(), "\t", " ")
			}
			fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", label, i, r.p.pid, filepath.Base(r.p.bin.path),
				ms(r.first), ms(r.firstComplete), r.samples, r.complete, r.trunc, r.unknown, r.short, r.notStart, errs)
		}
		if err := errors.Join(w.Flush(), f.Close()); err != nil {
			return err
		}
	}

	var total, complete uint64
	for _, r := range rows {
		total += r.samples
		complete += r.complete
	}
	slices.Sort(lat)
	dd := durMs(drainDurs)
	iv := durMs(intervals)
	fmt.Printf("label=%s processes=%d without_complete=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f samples=%d complete_share=%.4f drain_interval_p50_ms=%.1f drain_interval_p99_ms=%.1f drain_time_p50_ms=%.1f drain_time_p99_ms=%.1f\n",
		label, len(rows), missing, quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1), total, ratio(complete, total),
		quantile(iv, 0.5), quantile(iv, 0.99), quantile(dd, 0.5), quantile(dd, 0.99))
	// The program's counters over the processes' time, for every process
	// on the host (the busy build's too): why walks stopped early.
	fmt.Printf("label=%s host_unwound=%d host_max_frames=%d host_read_failed=%d host_bad_frame=%d host_caller_no_table=%d host_caller_pending=%d host_caller_no_mapping=%d host_file_requests=%d host_lost_file_requests=%d tables_builds=%d tables_errors=%d tables_no_space=%d tables_dropped=%d\n",
		label, st1.Unwound-st0.Unwound, st1.UnwindMaxFrames-st0.UnwindMaxFrames, st1.UnwindReadFailed-st0.UnwindReadFailed,
		st1.UnwindBadFrame-st0.UnwindBadFrame, st1.CallerNoTable-st0.CallerNoTable, st1.CallerPending-st0.CallerPending,
		st1.CallerNoMapping-st0.CallerNoMapping, st1.FileRequests-st0.FileRequests, st1.LostFileRequests-st0.LostFileRequests,
		tst.Builds, tst.BuildErrors, tst.NoSpace, tst.Dropped)
	return nil
}

func ms(d time.Duration) string {
	if d < 0 {
		return ""
	}
	return strconv.FormatFloat(d.Seconds()*1000, 'f', 1, 64)
}

func durMs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds() * 1000
	}
	slices.Sort(out)
	return out
}

// quantile of sorted xs, nearest rank; NaN when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(i, 0)]
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}
