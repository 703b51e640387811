package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/profiler"
	"github.com/scorch-profiler/scorch/internal/sampler"
	"github.com/scorch-profiler/scorch/symbolizer"
)

func runRecord(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("record", "[--pid PID]... [--duration 10s] [--frequency 99] [--output profile.pb.gz]", stdout)
	var pids pidList
	fs.Var(&pids, "pid", "profile only this process (repeatable, or comma-separated); default: every process")
	duration := fs.Duration("duration", 10*time.Second, "how long to profile; Ctrl-C ends early and still writes the file")
	frequency := fs.Int("frequency", 99, "samples per second on each CPU")
	output := fs.String("output", "profile.pb.gz", "where to write the profile: gzipped pprof, or folded stacks if the name ends in .folded or .txt")
	fs.StringVar(output, "o", "profile.pb.gz", "shorthand for --output")
	dropIdle := fs.Bool("drop-idle", false, "do not record the idle task (CPU idle time)")
	demangle := fs.String("demangle", "full", "C++/Rust names: full, simplified (no parameters or template arguments) or none")
	top := fs.Int("top", 10, "print this many top functions when done (0: none)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	stackMapSize := fs.Int("stack-map-size", sampler.DefaultStackMapEntries, "distinct stacks of each kind the kernel keeps between drains; more are counted as lost")
	unwindTables := fs.Bool("unwind-tables", true, "walk .eh_frame unwind tables in the kernel for code built without frame pointers; false: frame pointers only")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := checkFrequency(*frequency); err != nil {
		return err
	}
	if *stackMapSize < 64 || *stackMapSize > 1<<20 {
		return usageError{fmt.Errorf("--stack-map-size %d is out of range (64 to 1048576)", *stackMapSize)}
	}
	if *duration <= 0 {
		return usageError{fmt.Errorf("--duration must be positive")}
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

	// Catch Ctrl-C before loading anything: an interrupt while the BPF
	// program loads then still ends with a (short) profile written.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sym := symbolizer.New(symbolizer.Options{Demangle: dm, Logger: logger})
	defer sym.Close()
	prof, err := profiler.Open(profiler.Config{
		Sampler:    sampler.Options{Frequency: *frequency, Pids: pids, DropIdle: *dropIdle, FramePointersOnly: !*unwindTables, StackMapEntries: *stackMapSize},
		Symbolizer: sym,
		Logger:     logger,
	})
	if err != nil {
		return err
	}
	defer prof.Close()

	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	start := time.Now()
	fmt.Fprintf(stderr, "scorch: sampling %d CPUs at %d Hz for %s (Ctrl-C to stop early)\n", prof.CPUs(), *frequency, *duration)
	b := exporter.NewBuilder(sym, *frequency, start)
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
	if *top > 0 {
		printTop(stdout, p, *top)
	}
	return nil
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
