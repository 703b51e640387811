/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * In-kernel table unwinder for user stacks without frame pointers.
 * Include after scorch_kernel.h (the kernel types it reads) and
 * <bpf/bpf_helpers.h>. Needs bpf_loop and bpf_find_vma (Linux 5.17+).
 *
 * Tables are kept per file, not per process, so that a process nobody told
 * user space about unwinds right from its first sample when the files it
 * maps already have tables (a program started again and again, libc):
 *   unwind_rows   one big array of struct unwind_row; every ELF file's table
 *                 occupies a contiguous slice [first_row, first_row+nrows).
 *   unwind_files  the file's identity as the kernel sees it (device, inode
 *                 number and generation of the mapped inode) -> its slice
 *                 and the offset between file offsets and ELF addresses.
 *   unwind_procs  per process (tgid), the executable mappings the kernel has
 *                 learned for it with bpf_find_vma (start, end, page
 *                 offset, file): at exec (unwind_exec), at fork
 *                 (unwind_fork), and for a PC in none of them, once per
 *                 sample (see unwind_learn). User space reads a process's
 *                 entry to name the samples of a process that has exited,
 *                 and deletes it then.
 * For each PC the walker finds its mapping in that list, looks the file up
 * and binary searches its rows. A file not in unwind_files is requested once: the
 * walker inserts a placeholder (no rows) and sends a struct unwind_request
 * on the unwind_requests ring buffer; user space builds the table and
 * fills the entry. Until then, and for files without a table (JIT code,
 * anonymous memory, a file without CFI), frames follow the frame-pointer
 * chain, so FP and table frames mix freely in one stack.
 *
 * The program calls unwind_user(tgid, pc, sp, fp, lr) with the user registers of
 * the interrupted (current) task and gets the per-CPU unwind_state back with
 * stack.pcs[0..stack.n) filled, innermost first. Steps run under bpf_loop,
 * so stacks are not limited to what the verifier accepts for an unrolled
 * loop.
 */
#ifndef SCORCH_UNWIND_H
#define SCORCH_UNWIND_H

#include "unwind_table.h"

#ifndef UNWIND_ROW_BITS
#define UNWIND_ROW_BITS 21 /* 2M rows, 16 MiB */
#endif
#define UNWIND_MAX_ROWS (1u << UNWIND_ROW_BITS)

#ifndef UNWIND_MAX_FILES
#define UNWIND_MAX_FILES 8192
#endif

#ifndef UNWIND_MAX_PROCS
#define UNWIND_MAX_PROCS 8192
#endif

#ifndef UNWIND_PROC_MAPPINGS
#define UNWIND_PROC_MAPPINGS 16 /* executable mappings remembered per process */
#endif

#ifndef UNWIND_MAX_FRAMES
#define UNWIND_MAX_FRAMES 128 /* must be a power of two */
#endif

/* Offsets from SP, at the signal trampoline, of the interrupted registers
 * in the kernel's signal frame. */
#if defined(__TARGET_ARCH_arm64)
/* struct rt_sigframe { siginfo (128); ucontext { ..., uc_mcontext at 176 } };
 * sigcontext { fault_address; regs[31]; sp; pc; }. Not yet tested. */
#define UNWIND_SIG_PC 568
#define UNWIND_SIG_SP 560
#define UNWIND_SIG_FP 544
#else
/* At __restore_rt, rsp points to the ucontext; uc_mcontext is at 40:
 * rbp at +80, rsp at +120, rip at +128 in struct sigcontext. */
#define UNWIND_SIG_PC 168
#define UNWIND_SIG_SP 160
#define UNWIND_SIG_FP 120
#endif

/* A mapped file as the kernel knows it. The generation tells apart two
 * files that had the same inode number one after the other. */
struct unwind_file_key {
	__u64 ino;
	__u32 dev; /* the kernel's dev_t: MAJOR << 20 | MINOR */
	__u32 gen;
};

enum unwind_file_state {
	UNWIND_FILE_PENDING = 0, /* requested; user space has not answered */
	UNWIND_FILE_READY = 1,   /* answered: nrows rows, or none (FP) */
};

struct unwind_file {
	__u32 first_row; /* the file's table in unwind_rows */
	__u32 nrows;     /* 0: no table (none built yet, or none usable): FP */
	__s64 adj;       /* ELF virtual address = file offset + adj */
	__u64 last_used; /* READY: bpf_ktime_get_ns of a recent lookup (coarse); PENDING: of the request */
	__u32 state;     /* enum unwind_file_state */
	__u32 _pad;
};

/* What user space needs to build a file's table: whose mapping it is (to
 * open /proc/PID/map_files/START-END), or, with start == end == 0, the
 * executable of pid (the exec hook: /proc/PID/exe). */
struct unwind_request {
	struct unwind_file_key file;
	__u64 start, end;
	__u32 pid;
	__u32 _pad;
};

/* An executable mapping of a process, as bpf_find_vma described it. */
struct unwind_proc_mapping {
	__u64 start, end; /* runtime addresses [start, end) */
	__u64 pgoff;      /* file offset of start, in pages */
	struct unwind_file_key file;
	__u32 kind; /* enum unwind_mapping_kind */
	__u32 _pad;
};

enum unwind_mapping_kind {
	UNWIND_MAPPING_ANON = 0, /* anonymous memory (JIT code) */
	UNWIND_MAPPING_FILE = 1,
	UNWIND_MAPPING_VDSO = 2,
};

/* The mappings a process's samples have needed, learned by the kernel
 * (bpf_find_vma) without user space: at exec (the program and its
 * interpreter), at fork (the parent's), and one per sample for a PC in no
 * known mapping. A full list replaces its oldest entry. */
struct unwind_proc {
	__u32 n;      /* valid entries in m */
	__u32 next;   /* the slot the next mapping takes */
	__u64 miss_ns; /* when a lookup last found no code at a PC (a garbage PC) */
	__u64 miss_pc; /* ... and that PC */
	struct unwind_proc_mapping m[UNWIND_PROC_MAPPINGS];
};

/* After a lookup that found no code, the process's next lookups in the
 * same page wait this long: a stack whose frame-pointer fallback ends in
 * the same garbage would otherwise pay a bpf_find_vma (the mmap lock, and
 * an interrupt for its deferred unlock) at every sample. Lookups elsewhere
 * go on: a garbage PC must not keep a process's libraries unlearned. */
#define UNWIND_MISS_BACKOFF_NS 200000000ull

/* Samples are deferred (see unwind_state.defer_at) for a file whose table was
 * requested less than this long ago: a table that takes longer would
 * otherwise send every sample of its process to user space until it is in.
 * On a busy host a big Go binary's table takes hundreds of milliseconds. */
#define UNWIND_DEFER_NS 1000000000ull

/* The mapping of a PC, as the walker caches it: runtime addresses [start,
 * end), runtime address - ELF address, and the file's table. */
struct unwind_mapping {
	__u64 start;
	__u64 end;
	__u64 bias;
	__u32 first_row;
	__u32 nrows; /* 0: no table: FP */
	__u32 known; /* 1: the file is READY in unwind_files (with or without rows) */
	__u32 _pad;
};

/* Why unwinding stopped. */
enum unwind_stop {
	UNWIND_STOP_END = 1,        /* end of stack: END_OF_STACK row, or RA/FP 0 */
	UNWIND_STOP_MAX_FRAMES = 2, /* UNWIND_MAX_FRAMES reached */
	UNWIND_STOP_READ = 3,       /* reading the stack failed */
	UNWIND_STOP_BAD_FRAME = 4,  /* the stack did not grow towards callers */
	UNWIND_STOP_NO_LR = 5,      /* RA in LR needed beyond the first frame */
};

#define UNWIND_F_EXACT_PC 1 /* pc is not a return address: don't look up pc-1 */
#define UNWIND_F_DEFER_NO_MAPPING 0x100 /* defer_flags: deferred for want of the mapping, not of its table */

/* The unwound stack. The sampling program stores it as is (a map value),
 * so it is a struct of its own at the end of unwind_state. */
struct unwind_stack {
	__u32 n;            /* frames in pcs; pcs[n..] are stale */
	__u32 stop;         /* enum unwind_stop */
	__u32 table_frames; /* frames unwound by a table row */
	__u32 fp_frames;    /* frames unwound by the FP chain (fallback or FP rows) */
	/* enum unwind_caller: why the leaf's caller cannot be trusted (0: it
	 * can). The FP chain skips the caller of a leaf that keeps no frame
	 * record (gcc and Go emit such leaves even with frame pointers on), so
	 * a leaf walked by FP without a table says so instead of naming a
	 * wrong parent. */
	__u32 leaf_caller;
	__u32 _pad;
	__u64 pcs[UNWIND_MAX_FRAMES];
};

enum unwind_caller {
	UNWIND_CALLER_OK = 0,
	UNWIND_CALLER_NO_TABLE = 1,   /* the leaf's file has no table (none usable, JIT, anonymous) */
	UNWIND_CALLER_PENDING = 2,    /* the leaf's file table is being built */
	UNWIND_CALLER_NO_MAPPING = 3, /* the kernel could not say which mapping holds the leaf */
};

struct unwind_state {
	__u64 pc, sp, fp, lr;
	__u32 tgid;
	__u32 flags;
	__u32 caller;        /* enum unwind_caller of the last mapping lookup */
	__u32 vma_used;      /* 1: bpf_find_vma was called (at most once per sample, see unwind_find_mapping); 2: it found a new mapping */
	__u32 requests;      /* file requests sent by this walk */
	__u32 lost_requests; /* ... and lost */
	__u64 hash; /* of pcs[0..n), updated per frame (see unwind_hash) */
	struct unwind_stack stack;
	/* Lookup caches: the mapping of the last PC (map.end == 0: none) and
	 * the last row, valid for ELF addresses [row_lo, row_hi). */
	struct unwind_mapping map;
	__u32 row_lo, row_hi;
	struct unwind_row row;
	__u32 defer;    /* 1: note the first frame where user space can do better (defer_at) */
	__u32 vma_busy; /* the last lookup found no mapping because the sample's one bpf_find_vma was spent, or the mmap lock was busy */
	__u32 pending_young; /* the last lookup's file was requested less than UNWIND_DEFER_NS ago */
	/* With defer: the first frame walked without a table because its
	 * table is on the way (or its mapping could not be learned in this
	 * sample; its one bpf_find_vma was spent or the mmap lock was busy):
	 * 1 + its index in stack.pcs (0: none), and its registers. The walk
	 * goes on by frame pointer as without defer; the caller may hand
	 * these registers and a copy of the stack to user space, which walks
	 * from there with the table once it is in. */
	__u32 defer_at;
	__u32 defer_flags;
	__u64 defer_sp, defer_fp;
};

/* Memory-mappable (BPF_F_MMAPABLE, Linux 5.5): user space copies a table
 * in with one memcpy instead of a map update per row, before it publishes
 * the file's entry. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UNWIND_MAX_ROWS);
	__uint(map_flags, 1024 /* BPF_F_MMAPABLE */);
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UNWIND_MAX_FILES);
	__type(key, struct unwind_file_key);
	__type(value, struct unwind_file);
} unwind_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} unwind_requests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, UNWIND_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

/* An empty process, to create or reset an unwind_procs entry. */
static struct unwind_proc unwind_proc_empty;

/* Log2 of the page size (vm_pgoff is in pages); user space sets it. */
volatile const __u32 unwind_page_shift = 12;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_state);
} unwind_scratch SEC(".maps");

static long unwind_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct unwind_proc_mapping *m = data;
	if (!(BPF_CORE_READ(vma, vm_flags) & 0x4 /* VM_EXEC */))
		return 0; /* not code: a garbage PC in data, the heap or a stack */
	m->start = BPF_CORE_READ(vma, vm_start);
	m->end = BPF_CORE_READ(vma, vm_end);
	m->pgoff = BPF_CORE_READ(vma, vm_pgoff);
	struct file *f = BPF_CORE_READ(vma, vm_file);
	if (f) {
		struct inode *ino = BPF_CORE_READ(f, f_inode);
		m->file.ino = BPF_CORE_READ(ino, i_ino);
		m->file.gen = BPF_CORE_READ(ino, i_generation);
		m->file.dev = BPF_CORE_READ(ino, i_sb, s_dev);
		m->kind = UNWIND_MAPPING_FILE;
	} else if ((__u64)BPF_CORE_READ(vma, vm_mm, context.vdso) == m->start) {
		m->kind = UNWIND_MAPPING_VDSO; /* unwind_files has it under the zero key */
	}
	return 0;
}

/* unwind_learn asks the kernel for the mapping of task that holds addr
 * and adds it to proc. In interrupt context (the perf event) a program can
 * call bpf_find_vma once: the mmap lock's deferred unlock is per CPU, and a
 * second call before it runs fails with EBUSY. Returns the entry, or NULL. */
static __always_inline struct unwind_proc_mapping *unwind_learn(struct unwind_proc *proc, struct task_struct *task,
								 __u64 addr, long *err)
{
	struct unwind_proc_mapping m = {};
	*err = bpf_find_vma(task, addr, unwind_vma_cb, &m, 0);
	if (*err || m.end <= m.start)
		return 0;
	__u32 i = proc->next % UNWIND_PROC_MAPPINGS;
	proc->m[i] = m;
	proc->next = i + 1;
	if (proc->n < UNWIND_PROC_MAPPINGS)
		proc->n++;
	return &proc->m[i];
}

/* unwind_request_file asks user space for the table of file key, once:
 * the placeholder entry makes later lookups find it pending. pid's mapping
 * [start, end) maps it (0, 0: pid's executable). Returns 1 when sent, 0
 * when it was already asked for, -1 when the request was lost (the ring
 * buffer or unwind_files is full). */
static __always_inline int unwind_request_file(const struct unwind_file_key *key, __u64 start, __u64 end, __u32 pid)
{
	struct unwind_file pending = {.state = UNWIND_FILE_PENDING, .last_used = bpf_ktime_get_ns()};
	long err = bpf_map_update_elem(&unwind_files, key, &pending, BPF_NOEXIST);
	if (err == -17 /* EEXIST */)
		return 0; /* another CPU asked first */
	if (err)
		return -1; /* unwind_files is full */
	struct unwind_request *r = bpf_ringbuf_reserve(&unwind_requests, sizeof(*r), 0);
	if (!r) {
		/* Ring buffer full: forget the placeholder so a later sample asks again. */
		bpf_map_delete_elem(&unwind_files, key);
		return -1;
	}
	r->file = *key;
	r->start = start;
	r->end = end;
	r->pid = pid;
	r->_pad = 0;
	bpf_ringbuf_submit(r, 0);
	return 1;
}

/* unwind_find_mapping caches in st->map the mapping holding pc and its
 * file's table; st->caller says why there is no table. */
static __always_inline void unwind_find_mapping(struct unwind_state *st, __u64 pc)
{
	st->map.nrows = 0;
	st->map.known = 0;
	st->row_lo = 1;
	st->row_hi = 0; /* empty row cache */
	/* Until a mapping is found: this PC only. */
	st->map.start = pc;
	st->map.end = pc + 1;
	st->caller = UNWIND_CALLER_NO_MAPPING;
	st->vma_busy = 0;
	st->pending_young = 0;

	__u32 tgid = st->tgid;
	struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
	if (!proc) {
		bpf_map_update_elem(&unwind_procs, &tgid, &unwind_proc_empty, BPF_NOEXIST);
		proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
		if (!proc)
			return;
	}
	struct unwind_proc_mapping *m = 0;
	for (__u32 i = 0; i < UNWIND_PROC_MAPPINGS; i++) {
		if (i >= proc->n)
			break;
		if (proc->m[i].start <= pc && pc < proc->m[i].end) {
			m = &proc->m[i];
			break;
		}
	}
	if (!m) {
		if (st->vma_used) {
			st->vma_busy = 1; /* one bpf_find_vma per sample */
			return;
		}
		__u64 now = bpf_ktime_get_ns();
		if (now - proc->miss_ns < UNWIND_MISS_BACKOFF_NS && (pc ^ proc->miss_pc) < 4096)
			return;
		st->vma_used = 1;
		long err;
		m = unwind_learn(proc, bpf_get_current_task_btf(), pc, &err);
		if (!m) {
			if (err == -16 /* EBUSY */) {
				/* The mmap lock is taken (the process is mapping
				 * memory: ld.so at start-up) or the CPU's deferred
				 * unlock is still queued: not the PC's fault. */
				st->vma_busy = 1;
				return;
			}
			/* No code there: a garbage PC. */
			proc->miss_ns = now;
			proc->miss_pc = pc;
			return;
		}
		st->vma_used = 2; /* learned */
	}
	struct unwind_proc_mapping v = *m;
	st->map.start = v.start;
	st->map.end = v.end;
	st->caller = UNWIND_CALLER_NO_TABLE;
	if (v.kind == UNWIND_MAPPING_ANON) {
		/* Anonymous memory: JIT code, whose compilers keep frame
		 * records (V8; HotSpot with -XX:+PreserveFramePointer): FP. */
		st->caller = UNWIND_CALLER_OK;
		return;
	}
	struct unwind_file *f = bpf_map_lookup_elem(&unwind_files, &v.file);
	if (!f) {
		if (v.kind == UNWIND_MAPPING_FILE) {
			int sent = unwind_request_file(&v.file, v.start, v.end, st->tgid);
			if (sent > 0)
				st->requests++;
			else if (sent < 0)
				st->lost_requests++;
		}
		st->caller = UNWIND_CALLER_PENDING;
		st->pending_young = 1;
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	if (f->state != UNWIND_FILE_READY) {
		st->caller = UNWIND_CALLER_PENDING;
		st->pending_young = now - f->last_used < UNWIND_DEFER_NS;
		return;
	}
	if (now - f->last_used > 1000000000ull)
		f->last_used = now;
	st->map.known = 1;
	st->map.bias = v.start - (v.pgoff << unwind_page_shift) - f->adj;
	st->map.first_row = f->first_row;
	st->map.nrows = f->nrows;
	if (f->nrows)
		st->caller = UNWIND_CALLER_OK;
}

/* unwind_find_row finds the row for pc; 0 when there is none (FP fallback).
 * The last mapping and row found are cached in st: consecutive frames are
 * often in the same file and, in recursion, the same function. */
static __always_inline int unwind_find_row(struct unwind_state *st, __u64 pc, struct unwind_row *out)
{
	if (pc < st->map.start || pc >= st->map.end)
		unwind_find_mapping(st, pc);
	if (st->map.nrows == 0)
		return 0;

	__u64 rel = pc - st->map.bias;
	/* A return address may be just past the call's function (noreturn
	 * calls): look up the call instruction instead. */
	if (!(st->flags & UNWIND_F_EXACT_PC))
		rel -= 1;
	if (rel >> 32)
		return 0;
	if (rel >= st->row_lo && rel < st->row_hi) {
		*out = st->row;
		return 1;
	}

	__u32 first = st->map.first_row, idx, lo = 0, hi = st->map.nrows, mid;
	struct unwind_row *r;
	for (int i = 0; i <= UNWIND_ROW_BITS; i++) {
		if (lo >= hi)
			break;
		mid = (lo + hi) / 2;
		idx = first + mid;
		r = bpf_map_lookup_elem(&unwind_rows, &idx);
		if (!r)
			return 0;
		if (r->pc <= (__u32)rel)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return 0;
	/* The next row, if any, bounds the cached one. */
	st->row_hi = 0;
	if (lo < st->map.nrows) {
		idx = first + lo;
		r = bpf_map_lookup_elem(&unwind_rows, &idx);
		if (r)
			st->row_hi = r->pc;
	}
	idx = first + lo - 1;
	r = bpf_map_lookup_elem(&unwind_rows, &idx);
	if (!r)
		return 0;
	*out = *r;
	st->row = *r;
	st->row_lo = r->pc;
	return 1;
}

static __always_inline int unwind_read(__u64 *dst, __u64 addr)
{
	return bpf_probe_read_user(dst, sizeof(*dst), (const void *)addr);
}

/* unwind_step records st->pc and moves st to the caller. Returns 1 to stop. */
static __always_inline int unwind_step(struct unwind_state *st)
{
	if (st->stack.n >= UNWIND_MAX_FRAMES) {
		st->stack.stop = UNWIND_STOP_MAX_FRAMES;
		return 1;
	}
	__u64 pc = st->pc;
	st->stack.pcs[st->stack.n & (UNWIND_MAX_FRAMES - 1)] = pc;
	st->stack.n++;
	st->hash = (st->hash ^ pc) * 0x100000001b3ull; /* FNV-1a over words */

	struct unwind_row row = {};
	int kind = UNWIND_KIND_UNSUPPORTED;
	if (unwind_find_row(st, pc, &row))
		kind = UNWIND_ROW_KIND(&row);
	if (kind == UNWIND_KIND_UNSUPPORTED && st->defer && !st->defer_at &&
	    ((st->caller == UNWIND_CALLER_PENDING && st->pending_young) ||
	     (st->caller == UNWIND_CALLER_NO_MAPPING && st->vma_busy))) {
		st->defer_at = st->stack.n;
		st->defer_flags = st->flags;
		if (st->caller == UNWIND_CALLER_NO_MAPPING)
			st->defer_flags |= UNWIND_F_DEFER_NO_MAPPING;
		st->defer_sp = st->sp;
		st->defer_fp = st->fp;
	}
	if (st->stack.n == 1 && kind == UNWIND_KIND_UNSUPPORTED)
		st->stack.leaf_caller = st->caller == UNWIND_CALLER_OK && st->map.nrows ? UNWIND_CALLER_NO_TABLE : st->caller;

	__u64 cfa, ra = 0, fp = st->fp, sp;
	switch (kind) {
	case UNWIND_KIND_END_OF_STACK:
		st->stack.stop = UNWIND_STOP_END;
		return 1;
	case UNWIND_KIND_CFA:
		cfa = (UNWIND_ROW_CFA_REG(&row) == UNWIND_CFA_REG_FP ? st->fp : st->sp) + UNWIND_ROW_CFA_OFF(&row);
		if (row.ra != 0 && row.fp == row.ra - 1) {
			/* A frame record: saved FP and RA side by side, one read. */
			__u64 rec[2];
			if (bpf_probe_read_user(rec, sizeof(rec), (const void *)(cfa + (__s64)row.fp * 8))) {
				st->stack.stop = UNWIND_STOP_READ;
				return 1;
			}
			fp = rec[0];
			ra = rec[1];
		} else {
			if (row.ra == 0) {
				if (st->stack.n != 1) {
					st->stack.stop = UNWIND_STOP_NO_LR;
					return 1;
				}
				ra = st->lr;
			} else if (unwind_read(&ra, cfa + (__s64)row.ra * 8)) {
				st->stack.stop = UNWIND_STOP_READ;
				return 1;
			}
			if (row.fp != 0 && unwind_read(&fp, cfa + (__s64)row.fp * 8)) {
				st->stack.stop = UNWIND_STOP_READ;
				return 1;
			}
		}
		sp = cfa;
		st->stack.table_frames++;
		break;
	case UNWIND_KIND_PLT:
		cfa = st->sp + UNWIND_ROW_CFA_OFF(&row) + ((pc & 15) >= (__u8)row.fp ? 8 : 0);
		if (unwind_read(&ra, cfa - 8)) {
			st->stack.stop = UNWIND_STOP_READ;
			return 1;
		}
		sp = cfa;
		st->stack.table_frames++;
		break;
	case UNWIND_KIND_SIGNAL:
		if (unwind_read(&ra, st->sp + UNWIND_SIG_PC) || unwind_read(&sp, st->sp + UNWIND_SIG_SP) ||
		    unwind_read(&fp, st->sp + UNWIND_SIG_FP)) {
			st->stack.stop = UNWIND_STOP_READ;
			return 1;
		}
		st->stack.table_frames++;
		if (ra == 0) {
			st->stack.stop = UNWIND_STOP_END;
			return 1;
		}
		/* The interrupted PC is exact, and its SP may be anywhere
		 * (sigaltstack): skip the growth check. */
		st->pc = ra;
		st->sp = sp;
		st->fp = fp;
		st->flags |= UNWIND_F_EXACT_PC;
		return 0;
	default: /* UNWIND_KIND_FRAME_POINTER, UNWIND_KIND_STACK_SWITCH, UNWIND_KIND_UNSUPPORTED */
		if (st->fp == 0) {
			st->stack.stop = UNWIND_STOP_END;
			return 1;
		}
		cfa = st->fp + 16;
		{
			__u64 rec[2]; /* the frame record: saved FP, return address */
			if (bpf_probe_read_user(rec, sizeof(rec), (const void *)st->fp)) {
				st->stack.stop = UNWIND_STOP_READ;
				return 1;
			}
			fp = rec[0];
			ra = rec[1];
		}
		sp = cfa;
		st->stack.fp_frames++;
		if (kind == UNWIND_KIND_STACK_SWITCH) {
			/* The caller's stack is another one: skip the growth check. */
			if (ra == 0) {
				st->stack.stop = UNWIND_STOP_END;
				return 1;
			}
			st->pc = ra;
			st->sp = sp;
			st->fp = fp;
			st->flags &= ~UNWIND_F_EXACT_PC;
			return 0;
		}
		break;
	}
	if (ra == 0) {
		st->stack.stop = UNWIND_STOP_END;
		return 1;
	}
	if (sp <= st->sp) {
		st->stack.stop = UNWIND_STOP_BAD_FRAME;
		return 1;
	}
	st->pc = ra;
	st->sp = sp;
	st->fp = fp;
	st->flags &= ~UNWIND_F_EXACT_PC;
	return 0;
}

static long unwind_loop_cb(__u32 i, void *ctx)
{
	__u32 zero = 0;
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!st)
		return 1;
	return unwind_step(st);
}

/* unwind_user unwinds the user stack from the given registers (lr: arm64
 * x30, 0 on amd64). With defer, it notes the first frame whose table is on
 * the way or whose mapping it could not learn (defer_at). Returns the
 * per-CPU state, or NULL. */
static __always_inline struct unwind_state *unwind_user(__u32 tgid, __u64 pc, __u64 sp, __u64 fp, __u64 lr,
							 __u32 defer)
{
	__u32 zero = 0;
	struct unwind_state *st = bpf_map_lookup_elem(&unwind_scratch, &zero);
	if (!st)
		return 0;
	st->pc = pc;
	st->sp = sp;
	st->fp = fp;
	st->lr = lr;
	st->tgid = tgid;
	st->map.start = 0;
	st->map.end = 0;
	st->caller = 0;
	st->requests = 0;
	st->vma_used = 0;
	st->vma_busy = 0;
	st->defer = defer;
	st->defer_at = 0;
	st->lost_requests = 0;
	st->stack.leaf_caller = 0;
	st->row_lo = 1;
	st->row_hi = 0;
	st->hash = 0xcbf29ce484222325ull;
	st->stack.n = 0;
	st->stack.stop = 0;
	st->flags = UNWIND_F_EXACT_PC;
	st->stack.table_frames = 0;
	st->stack.fp_frames = 0;
	bpf_loop(UNWIND_MAX_FRAMES + 1, unwind_loop_cb, 0, 0);
	return st;
}

/* unwind_hash finishes st->hash (murmur3's fmix64): a 64-bit key for the
 * stack, so equal stacks share one map entry. */
static __always_inline __u64 unwind_hash(const struct unwind_state *st)
{
	__u64 h = st->hash ^ st->stack.n ^ ((__u64)st->stack.leaf_caller << 56);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

/* unwind_learn_requested learns the mapping at addr (unwind_learn) and asks
 * for its file's table unless the kernel has an entry for the file. */
static __always_inline struct unwind_proc_mapping *unwind_learn_requested(struct unwind_proc *proc,
									   struct task_struct *task, __u64 addr,
									   __u32 tgid)
{
	long err;
	struct unwind_proc_mapping *m = unwind_learn(proc, task, addr, &err);
	if (m && m->kind == UNWIND_MAPPING_FILE && !bpf_map_lookup_elem(&unwind_files, &m->file)) {
		struct unwind_proc_mapping v = *m;
		unwind_request_file(&v.file, v.start, v.end, tgid);
	}
	return m;
}

/* unwind_exec starts a process's mapping list afresh at exec, with the
 * new program's text (from start_code) and the code at entry_pc (its
 * interpreter, ld.so, or the program itself), and asks for the tables of
 * their files at once. Called from the exec tracepoint: task context, where
 * bpf_find_vma may be called more than once. */
static __always_inline void unwind_exec(__u32 tgid, __u64 start_code, __u64 entry_pc)
{
	bpf_map_update_elem(&unwind_procs, &tgid, &unwind_proc_empty, BPF_ANY);
	struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
	if (!proc)
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	struct unwind_proc_mapping *m = unwind_learn_requested(proc, task, start_code, tgid);
	if (m && entry_pc >= m->start && entry_pc < m->end)
		return; /* a static program: no interpreter */
	unwind_learn_requested(proc, task, entry_pc, tgid);
}

/* unwind_fork gives a new process its parent's mappings (fork copies them),
 * or none: an entry left under the child's pid by an exited process (kept
 * for user space until it forgets that process) is not the child's. */
static __always_inline void unwind_fork(__u32 parent, __u32 child)
{
	struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &parent);
	if (proc)
		bpf_map_update_elem(&unwind_procs, &child, proc, BPF_ANY);
	else
		bpf_map_delete_elem(&unwind_procs, &child);
}

#endif /* SCORCH_UNWIND_H */
