// Package sampler owns the kernel side of Scorch: it probes the kernel's BPF
// features, loads the best BPF program of package bpf the kernel runs (see
// Program: the table walk needs bpf_loop, 5.17; the frame-pointer-only
// object needs 5.8), opens one software cpu-clock perf event per online CPU
// in frequency mode, attaches the program to each through a BPF link (by
// ioctl before 5.15), and drains the maps the program fills.
//
// # How samples flow
//
// On every tick of a CPU's cpu-clock event the kernel runs the BPF program
// in interrupt context on that CPU. The program takes the kernel and user
// call stacks of the interrupted task (bpf_get_stack), stores each in a hash
// map under a 64-bit hash of its addresses, and increments a counter keyed by
// (pid, tid, comm, kernel stack hash, user stack hash) in a hash map.
//
// Stacks are not kept in BPF_MAP_TYPE_STACK_TRACE maps (bpf_get_stackid):
// those are tables of single buckets indexed by a 32-bit hash, and a second
// distinct stack landing in an occupied bucket is refused, so they lose
// samples long before they are full (about n²/2m of n distinct stacks in m
// buckets). A hash map keyed by a 64-bit hash refuses a stack only when it
// holds Options.StackMapEntries stacks since the last drain.
//
// # Draining without losing samples
//
// The maps come in two sets. Drain flips the set the program writes to
// (config.active_set), then updates a map-in-map (sync_barrier): the kernel
// does not return from that update before every BPF program that might still
// be running has finished (synchronize_rcu). From then on the old set is
// quiescent: Drain reads it whole and clears it, while new samples go to the
// other set. Batch lookup-and-delete on a single set was the alternative; it
// was not chosen because a stack read after its count may already have been
// replaced or deleted by a new sample, so the pairing of count and stack
// would race. Within the quiescent set Drain does use batch operations
// (BPF_MAP_LOOKUP_AND_DELETE_BATCH): each map is read and emptied a few
// hundred entries per system call, stacks first.
//
// # Stacks without frame pointers
//
// bpf_get_stack follows the frame-pointer chain, which stops at the first
// function built without one (Debian's libc, most C, C++ and Rust release
// builds) and skips the caller of a leaf that keeps no frame record. So,
// unless Options.FramePointersOnly is set or the kernel lacks bpf_loop and
// bpf_find_vma, the program walks every user stack with the table unwinder
// of unwinder/bpf/unwind.h, under bpf_loop, up to 128 frames. Those stacks
// go to a hash map per set keyed by a 64-bit hash of the addresses (the
// sample key says STACK_UNWOUND and carries the hash). Why a walk stopped
// early, and why a leaf's caller had to be marked unknown
// (Sample.UserCallerUnknown), is counted in Stats.
//
// Tables are kept per file, not per process, and the kernel finds a PC's
// mapping itself: it keeps each process's executable mappings in
// unwind_procs, learned with bpf_find_vma at exec (the program and its
// interpreter), copied at fork, and added when a sample meets a PC in none
// of them (one lookup per sample: in interrupt context a second one fails
// until the mmap lock's deferred unlock has run). A mapped file is known by
// the kernel's identity for it (device, inode number, generation); one the
// kernel has no entry for is asked for once, on the unwind_requests ring
// buffer. So a process started after the sampler unwinds whole from its
// first samples when its files already have tables (libc, a program
// started again and again), with no handshake with user space.
//
// The requests are answered by one worker goroutine (tables.go), so
// neither sampling nor Drain ever waits for them; it hands tables with a
// lot of unwind information (libc, a big Go binary) to a builder goroutine
// (two at a time, one of them big: a big Go binary's allocates over 100 MB), so that
// a small program started beside one is answered at once. The file is
// opened as the request arrives (a short-lived process may exit before it
// is built): through
// the requesting process's /proc/PID/map_files (files in containers and
// deleted files work) and handed to Options.Files, the cache of opened,
// parsed files it shares with the symbolizer (package process: a file either
// opened first is not opened or parsed again); it builds its table once per
// build id under process.Guard (a malformed file is counted, never a crash), reads it
// from the on-disk cache instead when Options.TableCacheDir has it, copies
// it into a slice of the shared row array (first fit;
// Options.UnwindTableBytes bounds it, 16 MiB by default: files that do not
// fit use frame pointers) and writes the file's entry. Entries the walker
// has not used for a minute are removed and their rows freed (sooner when
// the row array needs the room), after the same barrier Drain uses, so
// that no program still reads them. The vDSO's table is built once from the
// sampler's own vDSO, which is the same in every process. A sampler of
// every process also loads, in the background when it starts, the tables
// of the shared libraries that most running processes map (libc, the
// dynamic loader, libstdc++; see warm): without it the first process to
// need libc after the sampler started would wait for libc's table, its
// samples in the meantime stopping in libc.
//
// A sample whose walk meets code whose table is still on the way (a
// program new to the profiler, in its first milliseconds), or code in a
// mapping the sample could not learn, is not counted by the program: it is
// deferred to user space with the registers of that frame, a copy of the
// stack above them and the kernel's own walk, and the table worker walks
// on from there once the table is in (deferred.go); Drain returns it with
// the samples of the maps. So no sample's stack is guessed by frame
// pointer for want of a table that is on its way, and none ends up worse
// than the kernel's walk. DrainFinal finishes those still waiting.
//
// What the program could not record is counted per reason in a per-CPU
// array; Drain reports those counters with every batch.
package sampler
