package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/flagval"
	"github.com/scorch-profiler/scorch/internal/profiler"
	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/symbolizer"
)

func runRecord(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("record", "[--pid PID]... [--duration 10s] [--frequency 99] [--output profile.pb.gz]", stdout)
	var pids pidList
	fs.Var(&pids, "pid", "profile only this process (repeatable, or comma-separated); default: every process")
	var (
		duration                time.Duration
		frequency, top, mapSize int
		dropIdle, unwindTables  bool
	)
	flagval.DurationVar(fs.FlagSet, &duration, "duration", 10*time.Second, "how long to profile; Ctrl-C ends early and still writes the file")
	flagval.IntVar(fs.FlagSet, &frequency, "frequency", 99, "samples per second on each CPU (1 to 100000)")
	output := fs.String("output", "profile.pb.gz", "where to write the profile: gzipped pprof, or folded stacks if the name ends in .folded or .txt; checked before recording starts")
	fs.StringVar(output, "o", "profile.pb.gz", "shorthand for --output")
	flagval.BoolVar(fs.FlagSet, &dropIdle, "drop-idle", false, "do not record the idle task (CPU idle time)")
	demangle := fs.String("demangle", "full", "C++/Rust names: full, simplified (no parameters or template arguments) or none")
	flagval.IntVar(fs.FlagSet, &top, "top", 10, "print this many top functions when done (0: none)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	flagval.IntVar(fs.FlagSet, &mapSize, "stack-map-size", 0, "distinct stacks of each kind the kernel keeps between drains (0: every sample of two seconds on every CPU at --frequency, at least 1024; else 64 to 1048576); more are counted as lost")
	flagval.BoolVar(fs.FlagSet, &unwindTables, "unwind-tables", true, "walk .eh_frame unwind tables in the kernel for code built without frame pointers; false: frame pointers only")
	tableCache := fs.String("unwind-table-cache", defaultTableCache(), "directory where built unwind tables are kept by build id, so that the next run builds each once (at most 64 MiB; empty: none)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := checkFrequency(frequency); err != nil {
		return err
	}
	if mapSize != 0 && (mapSize < 64 || mapSize > 1<<20) {
		return usageError{fmt.Errorf("--stack-map-size %d is out of range (0, or 64 to 1048576)", mapSize)}
	}
	if duration <= 0 {
		return usageError{fmt.Errorf("--duration %s: want a positive duration such as 10s", duration)}
	}
	if top < 0 {
		return usageError{fmt.Errorf("--top %d: want 0 (print nothing) or more", top)}
	}
	dm, err := parseDemangle(*demangle)
	if err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return fmt.Errorf("--pid %d: no such process", pid)
		}
	}
	// Before anything is recorded: a profile that cannot be written is
	// better refused now than lost after --duration.
	if err := checkOutput(*output); err != nil {
		return err
	}

	// Catch Ctrl-C before loading anything: an interrupt while the BPF
	// program loads then still ends with a (short) profile written.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sym := symbolizer.New(symbolizer.Options{Demangle: dm, Logger: logger})
	defer sym.Close()
	for _, pid := range pids {
		// Now, so that its executable (the profile's main mapping) and
		// files are known even if it exits or never runs on a CPU.
		_ = sym.Observe(pid)
	}
	raisePriority()
	prof, err := profiler.Open(profiler.Config{
		Sampler: sampler.Options{Frequency: frequency, Pids: pids, DropIdle: dropIdle, FramePointersOnly: !unwindTables,
			StackMapEntries: mapSize, TableCacheDir: *tableCache},
		Symbolizer: sym,
		Logger:     logger,
	})
	if err != nil {
		return err
	}
	defer prof.Close()

	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	start := time.Now()
	fmt.Fprintf(stderr, "scorch: sampling %d CPUs at %d Hz for %s (Ctrl-C to stop early)\n", prof.CPUs(), frequency, duration)
	b := exporter.NewBuilder(sym, frequency, start)
	if len(pids) == 1 {
		// Its executable names the profile (pprof's "File:"), even if
		// few of its samples fall in it; with several pids or none, the
		// busiest process's does.
		b.SetMainProcess(pids[0])
	}
	var last sampler.Stats
	end := start
	err = prof.Run(ctx, func(batch profiler.Batch) {
		for _, s := range batch.Samples {
			b.Add(s)
		}
		last = batch.Stats
		end = batch.Scheduled
	})
	if err != nil {
		return err
	}
	ts := prof.TableStats()
	logger.Info("sampling done", "samples", b.Samples(), "deferred", last.Deferred, "deferred_lost", last.LostDeferred,
		"deferred_finished", ts.DeferredFinished, "deferred_incomplete", ts.DeferredIncomplete, "deferred_bytes", ts.DeferredBytes,
		"table_requests", ts.Requests, "table_builds", ts.Builds, "table_build_time", ts.BuildTime,
		"table_build_errors", ts.BuildErrors, "table_requests_dropped", ts.Dropped, "file_requests_lost", last.LostFileRequests)
	p, err := b.Build(end)
	if err != nil {
		return err
	}
	if err := exporter.WriteFile(*output, p); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "scorch: wrote %s: %d samples in %s", *output, b.Samples(), end.Sub(start).Round(time.Millisecond))
	if lost := last.LostCountsFull; lost > 0 {
		fmt.Fprintf(stderr, ", %d samples lost (counts map full)", lost)
	}
	if n := last.LostUserStack + last.LostKernelStack; n > 0 {
		fmt.Fprintf(stderr, ", %d stacks not stored (stack maps full: raise --stack-map-size; kept as %q frames)", n, exporter.FrameUserStackLost)
	}
	fmt.Fprintln(stderr)
	if top > 0 {
		printTop(stdout, p, top)
	}
	return nil
}

// checkOutput says why a profile could not be written to path: its
// directory is missing or takes no new files (exporter.WriteFile creates a
// temporary file there and renames it), or path is a directory.
func checkOutput(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--output %s: is a directory; name a file", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("--output %s: directory %s: %w", path, dir, unwrapPath(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("--output %s: %s is not a directory", path, dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("--output %s: cannot create files in %s: %w", path, dir, unwrapPath(err))
	}
	f.Close()
	return os.Remove(f.Name())
}

// unwrapPath drops the operation and path of a *fs.PathError, which the
// caller's message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func parseDemangle(s string) (symbolizer.DemangleMode, error) {
	switch s {
	case "full":
		return symbolizer.DemangleFull, nil
	case "simplified":
		return symbolizer.DemangleSimplified, nil
	case "none":
		return symbolizer.DemangleNone, nil
	}
	return 0, usageError{fmt.Errorf("--demangle must be full, simplified or none, not %q", s)}
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %v", err)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// defaultTableCache is where record keeps unwind tables between runs: the
// user's cache directory ($XDG_CACHE_HOME, else ~/.cache), or none.
func defaultTableCache() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "scorch", "unwind-tables")
}
