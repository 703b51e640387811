/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * In-kernel table unwinder for user stacks without frame pointers.
 * Include after <linux/bpf.h> (or vmlinux.h) and <bpf/bpf_helpers.h>.
 * Needs bpf_loop (Linux 5.17+).
 *
 * User space (Go package unwinder) fills two maps:
 *   unwind_rows   one big array of struct unwind_row; every ELF file's table
 *                 occupies a contiguous slice [first_row, first_row+nrows).
 *                 Tables are shared by all processes mapping the same file.
 *   unwind_procs  per process (tgid): its executable mappings sorted by
 *                 start, each with its load bias and table slice.
 * The program calls unwind_user(tgid, pc, sp, fp, lr) with the user
 * registers of the interrupted task and gets the per-CPU unwind_state back
 * with stack.pcs[0..stack.n) filled, innermost first.
 *
 * Each step finds the mapping (binary search, UNWIND_MAPPING_BITS+1
 * iterations at most), then the row (UNWIND_ROW_BITS+1 iterations at most)
 * and applies it. PCs outside any mapping with a table, and rows of kind
 * UNSUPPORTED, are unwound through the frame-pointer chain, so FP and table
 * frames mix freely in one stack. Steps run under bpf_loop, so stacks are
 * not limited to what the verifier accepts for an unrolled loop.
 */
#ifndef SCORCH_UNWIND_H
#define SCORCH_UNWIND_H

#include "unwind_table.h"

#ifndef UNWIND_ROW_BITS
#define UNWIND_ROW_BITS 21 /* 2M rows, 16 MiB */
#endif
#define UNWIND_MAX_ROWS (1u << UNWIND_ROW_BITS)

#ifndef UNWIND_MAPPING_BITS
#define UNWIND_MAPPING_BITS 7 /* 128 executable mappings per process */
#endif
#define UNWIND_MAX_MAPPINGS (1u << UNWIND_MAPPING_BITS)

#ifndef UNWIND_MAX_PROCS
#define UNWIND_MAX_PROCS 1024
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

struct unwind_mapping {
	__u64 start;     /* runtime addresses [start, end) */
	__u64 end;
	__u64 bias;      /* runtime address - ELF virtual address */
	__u32 first_row; /* the file's table in unwind_rows */
	__u32 nrows;     /* 0: no table (JIT, anonymous, not built yet): FP only */
};

struct unwind_proc {
	__u32 nmappings; /* sorted by start, non-overlapping */
	__u32 _pad;
	struct unwind_mapping mappings[UNWIND_MAX_MAPPINGS];
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

/* The unwound stack. The sampling program stores it as is (a map value),
 * so it is a struct of its own at the end of unwind_state. */
struct unwind_stack {
	__u32 n;            /* frames in pcs; pcs[n..] are stale */
	__u32 stop;         /* enum unwind_stop */
	__u32 table_frames; /* frames unwound by a table row */
	__u32 fp_frames;    /* frames unwound by the FP chain (fallback or FP rows) */
	__u64 pcs[UNWIND_MAX_FRAMES];
};

struct unwind_state {
	__u64 pc, sp, fp, lr;
	__u32 tgid;
	__u32 flags;
	__u64 hash; /* of pcs[0..n), updated per frame (see unwind_hash) */
	struct unwind_stack stack;
	/* Lookup caches: the mapping of the last PC (map.end == 0: none) and
	 * the last row, valid for ELF addresses [row_lo, row_hi). */
	struct unwind_mapping map;
	__u32 row_lo, row_hi;
	struct unwind_row row;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UNWIND_MAX_ROWS);
	__type(key, __u32);
	__type(value, struct unwind_row);
} unwind_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, UNWIND_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct unwind_proc);
} unwind_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_state);
} unwind_scratch SEC(".maps");

/* unwind_find_row finds the row for pc; 0 when there is none (FP fallback).
 * The last mapping and row found are cached in st: consecutive frames are
 * often in the same file and, in recursion, the same function. */
static __always_inline int unwind_find_row(struct unwind_state *st, __u64 pc, struct unwind_row *out)
{
	if (pc < st->map.start || pc >= st->map.end) {
		__u32 tgid = st->tgid;
		struct unwind_proc *proc = bpf_map_lookup_elem(&unwind_procs, &tgid);
		if (!proc)
			return 0;
		__u32 lo = 0, hi = proc->nmappings, mid;
		if (hi > UNWIND_MAX_MAPPINGS)
			hi = UNWIND_MAX_MAPPINGS;
		for (int i = 0; i <= UNWIND_MAPPING_BITS; i++) {
			if (lo >= hi)
				break;
			mid = (lo + hi) / 2;
			if (proc->mappings[mid & (UNWIND_MAX_MAPPINGS - 1)].start <= pc)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == 0)
			return 0;
		struct unwind_mapping *m = &proc->mappings[(lo - 1) & (UNWIND_MAX_MAPPINGS - 1)];
		if (pc >= m->end)
			return 0;
		st->map = *m;
		st->row_lo = 1;
		st->row_hi = 0; /* empty row cache */
	}
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
 * x30, 0 on amd64). Returns the per-CPU state, or NULL. */
static __always_inline struct unwind_state *unwind_user(__u32 tgid, __u64 pc, __u64 sp, __u64 fp, __u64 lr)
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
	__u64 h = st->hash ^ st->stack.n;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

#endif /* SCORCH_UNWIND_H */
