// Package unwinder compiles DWARF call frame information (.eh_frame and
// .debug_frame) into compact unwind tables that Scorch's BPF program walks
// in the kernel, so that user stacks can be unwound through code built
// without frame pointers (Debian's libc, C/C++/Rust release builds).
//
// # Why tables
//
// Frame-pointer unwinding follows the rbp chain and stops, or goes wrong, at
// the first function that does not keep one. The compiler's call frame
// information describes, for every instruction, how to find the caller's
// frame: the canonical frame address (CFA, the caller's stack pointer before
// the call) as a register plus offset, and where the return address and the
// callee-saved registers are. Interpreting CFA programs in BPF is too
// expensive, so Build runs them ahead of time (internal/cfi is the parser
// and interpreter) and keeps only what unwinding needs: per PC range, the
// CFA rule, where the return address is, and where the caller's frame
// pointer is. Adjacent equal rows are merged.
//
// # Row format
//
// A row is 8 bytes (struct unwind_row in bpf/unwind_table.h, which is the
// authoritative description): a u32 PC (ELF virtual address), a u16 holding
// the row kind (3 bits), the CFA base register (SP or FP, 1 bit) and the
// CFA offset in 8-byte words (12 bits, up to 32760 bytes), and two signed
// bytes giving the saved-FP and return-address slots relative to the CFA in
// words (0 meaning "unchanged" and "still in the link register"). That
// expresses amd64 (RA always at CFA-8) and arm64 (CFA from sp or x29, x29/x30
// saved anywhere within ±1 KiB of the CFA, or x30 still live in leaf frames).
// Row kinds besides the plain CFA rule: FRAME_POINTER (CFA = FP+16, a frame
// record), END_OF_STACK (RA undefined, e.g. _start and the child side of
// clone/clone3, or a known entry symbol such as start_thread or
// runtime.goexit), PLT (the amd64 lazy-PLT CFA expression
// rsp+8 + ((rip&15) >= N ? 8 : 0), N stored in the FP byte), SIGNAL (a
// trampoline marked with the 'S' augmentation, whose caller registers are
// read from the ucontext on the stack), STACK_SWITCH (the calls of Go's
// runtime functions that switch to the system stack, asmcgocall,
// systemstack and the vDSO calls: the frame record on the goroutine stack
// leads back to it, so cgo stacks reach main.main and runtime.goexit) and
// UNSUPPORTED (anything else: counted by reason in Stats, unwound through
// the frame-pointer chain).
// Gaps of at least 16 bytes between FDEs become UNSUPPORTED rows; shorter
// gaps are alignment padding and keep the previous rule.
//
// On libc.so.6 (Debian, 1.4 MB of text) a table is about 23k rows, 185 KB.
//
// # How the BPF side finds tables (bpf/unwind.h)
//
// Tables live in one BPF_MAP_TYPE_ARRAY of rows (unwind_rows, 2M rows = 16
// MiB by default, memory-mapped so that user space copies a table in at
// once): user space gives every distinct ELF file (by build id) a
// contiguous slice [first_row, first_row+nrows), and frees slices the walker
// has not used for a while (a simple first-fit allocator is enough; tables
// are immutable). One big array keeps the verifier simple (a single map,
// bounded index) compared with ARRAY_OF_MAPS, whose inner maps would need
// one map per file and a lookup per frame.
//
// The kernel, not user space, says which file and offset a PC belongs to:
// unwind_procs (keyed by tgid) holds up to 16 executable mappings per
// process, learned with bpf_find_vma at exec (the program and its
// interpreter), copied from the parent at fork, and added for a PC in none
// of them (once per sample: in interrupt context a second bpf_find_vma
// fails until the mmap lock's deferred unlock has run). Each mapping names
// its file as the kernel knows it (device, inode, generation); unwind_files
// maps that to the file's slice and to the offset between file offsets and
// ELF addresses, so bias = start - page offset - that offset. A file with
// no entry is asked for once on the unwind_requests ring buffer; until user
// space answers, and for files without a table (JIT code, a file without
// CFI), the FP chain is used there.
//
// Each step scans the process's mappings (at most 16) and binary-searches the
// file's rows (at most 22 probes, one map lookup each) for the last row with
// pc <= PC-bias (PC-1 for return addresses, since a call may be the last
// instruction of a function), applies the row and moves to the caller. The
// last mapping and row found are cached for the next step (consecutive
// frames share a file, recursive ones a row), and a saved FP/return address
// pair is read with one access. Steps
// run under bpf_loop with the state in a per-CPU array, so stacks of 128
// frames (UNWIND_MAX_FRAMES; raise it freely) do not need an unrolled loop
// and do not hit the 127-frame limit of bpf_get_stack; no tail calls are
// needed. The program passes the user registers of the interrupted task:
// from the perf event context when the sample hit user mode, otherwise from
// bpf_task_pt_regs(bpf_get_current_task_btf()).
//
// Unwind is the same walk in Go, used by tests against stopped processes
// and as a reference for the BPF code.
//
// # Go binaries
//
// On amd64 the rows of Go functions come from Go's own pclntab (package
// internal/gopclntab), which stripped binaries (-ldflags='-s -w', no
// .debug_frame) keep: its pcsp table gives the SP delta of every PC, so
// CFA = SP + delta + 8 with the return address at CFA-8, and the caller's
// FP is at CFA-16 from the instruction after the prologue saved it
// (goFrameSave: "PUSHQ BP" since Go 1.21, "MOVQ BP, n-8(SP)" before) to
// the epilogue that restores it; frameless leaves leave FP unchanged. The
// frame-pointer chain would drop the caller of every frameless leaf. The
// runtime's top frames (FlagTopFrame: goexit, rt0_go, mstart) and the
// functions that write SP (FlagSPWrite: gogo, morestack, mcall, ...) end
// the stack, except the stack switches of stackSwitchFuncs (systemstack,
// asmcgocall, and the vDSO calls of time.now and nanotime1), whose frame
// record on the goroutine stack is followed: STACK_SWITCH rows from their
// "PUSHQ BP; MOVQ SP, BP" to their "POPQ BP", which skip the check that
// the caller's SP is above the stopped one (SP may be on the system
// stack, in the function itself or in its callee). The names
// of those functions come from the pclntab when the symbol table is
// stripped. .eh_frame/.debug_frame rows stay for the code the pclntab
// does not cover (cgo's C code). arm64 Go code keeps its .debug_frame rows
// (FP unchanged) or the FP chain.
package unwinder
