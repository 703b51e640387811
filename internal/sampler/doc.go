// Package sampler owns the kernel side of Scorch: it loads the BPF program of
// package bpf, opens one software cpu-clock perf event per online CPU in
// frequency mode, attaches the program to each through a BPF link, and
// drains the maps the program fills.
//
// # How samples flow
//
// On every tick of a CPU's cpu-clock event the kernel runs the BPF program
// in interrupt context on that CPU. The program stores the kernel and user
// call stacks of the interrupted task in stack-trace maps (an id per distinct
// stack) and increments a counter keyed by (pid, tid, comm, kernel stack id,
// user stack id) in a hash map.
//
// # Draining without losing samples
//
// The maps come in two sets. Drain flips the set the program writes to
// (config.active_set), then updates a map-in-map (sync_barrier): the kernel
// does not return from that update before every BPF program that might still
// be running has finished (synchronize_rcu). From then on the old set is
// quiescent: Drain reads it whole and clears it, while new samples go to the
// other set. Batch lookup-and-delete on a single set was the alternative; it
// was not chosen because stack-trace maps support no batch operations, and a
// stack id read from the counts map may be reused by a new sample before we
// read the stack, so the pairing of count and stack would race.
//
// What the program could not record is counted per reason in a per-CPU
// array; Drain reports those counters with every batch.
package sampler
