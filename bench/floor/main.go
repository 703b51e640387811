// Command floor is the cost floor of sampling at a frequency: a BPF
// program that does nothing, attached to a cpu-clock perf event on every
// CPU, as Scorch's sampler is. bench/run.sh runs it beside the profilers
// so that a slowdown can be split into what any cpu-clock sampler pays
// on this machine (the timer interrupt, the perf event, entering a BPF
// program) and what the profiler adds.
//
// Usage: floor FREQUENCY (runs until SIGINT or SIGTERM).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: floor FREQUENCY")
	}
	freq, err := strconv.Atoi(os.Args[1])
	if err != nil || freq <= 0 {
		return fmt.Errorf("frequency %q: want a positive integer", os.Args[1])
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.PerfEvent,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load no-op program: %w", err)
	}
	defer prog.Close()
	for cpu := 0; cpu < runtime.NumCPU(); cpu++ {
		attr := unix.PerfEventAttr{
			Type:   unix.PERF_TYPE_SOFTWARE,
			Config: unix.PERF_COUNT_SW_CPU_CLOCK,
			Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
			Sample: uint64(freq),
			Bits:   unix.PerfBitFreq,
		}
		fd, err := unix.PerfEventOpen(&attr, -1, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
		if err != nil {
			return fmt.Errorf("open cpu-clock event on CPU %d: %w", cpu, err)
		}
		defer unix.Close(fd)
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: fd, Program: prog, Attach: ebpf.AttachPerfEvent})
		if err != nil {
			return fmt.Errorf("attach on CPU %d: %w", cpu, err)
		}
		defer l.Close()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}
