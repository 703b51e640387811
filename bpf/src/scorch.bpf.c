// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// Scorch's sampling program. A software cpu-clock perf event fires on every
// CPU at a fixed frequency and runs scorch_sample, which records the kernel
// and user stacks of whatever was running and counts (process, thread, comm,
// stacks) in a hash map.
//
// Stacks are stored in hash maps keyed by a 64-bit hash of their addresses
// (stacks_kern{0,1}, stacks_user{0,1}, stacks_unwound{0,1}), not in
// BPF_MAP_TYPE_STACK_TRACE maps: a stack-trace map is a table of single
// buckets indexed by a 32-bit hash, where two distinct stacks that land in
// one bucket lose the second (bpf_get_stackid's -EEXIST), so it loses
// samples long before it is full. A hash map only refuses a stack when it
// is full.
//
// Maps come in two sets (0 and 1). The program writes to the set named by
// config.active_set; user space flips it, waits until no program still runs
// against the old set (see sync_barrier), drains the old set and clears it.
// So a drain never races with a sample and no sample is lost between drains.
//
// User stacks are walked with unwind tables kept per file (unwind_files,
// see unwinder/bpf/unwind.h), so code built without frame pointers unwinds
// to its outermost frame from a process's first sample when its files have
// tables; they go to stacks_unwound{0,1}, keyed by a hash of the addresses.
// The exec hook asks user space for a new program's table at once.
//
// The table walk needs bpf_loop and bpf_find_vma (Linux 5.17),
// bpf_task_pt_regs (5.15) and bpf_get_current_task_btf (5.11). Built with -DSCORCH_FP_ONLY (the ScorchFp
// object) the program leaves the walk out and calls none of them: every user
// stack is walked through frame pointers (bpf_get_stack), which needs only
// what Linux 5.8 has. It declares the same maps, so user space loads either
// object into one set of Go bindings.
//
// Samples can be filtered before anything is recorded (see sample_filter):
// by process (pid_filter) and by cgroup v2 id (cgroup_filter), each with an
// include and an exclude set. Filtered samples never reach user space; they
// are counted in `stats` (STAT_FILTERED, STAT_EXCLUDED).
//
// Whatever cannot be recorded is counted by reason in the per-CPU `stats`
// array: no sample is lost silently.

#include "scorch_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "unwind.h"

char __license[] SEC("license") = "Dual MIT/GPL";

#define MAX_STACK_DEPTH 127
#define TASK_COMM_LEN 16

// Stack ids in a sample_key: no stack of that kind was taken (STACK_NONE:
// e.g. the kernel stack of a sample taken in user mode) or it could not be
// stored (STACK_LOST: the stack map was full). STACK_UNWOUND: the user stack
// was walked with unwind tables and is in stacks_unwound{0,1} under
// sample_key.user_stack_hash. STACK_HASHED: the stack was walked through
// frame pointers (bpf_get_stack) and is in stacks_user{0,1} (or
// stacks_kern{0,1}) under the key's user (or kernel) stack hash.
#define STACK_NONE -1
#define STACK_LOST -2
#define STACK_UNWOUND -3
#define STACK_HASHED -4
#define STACK_DEFERRED -5 // sent to user space to finish (deferred); not counted here

// Keys of the per-CPU `stats` array. Keep in sync with internal/sampler.
enum stat_key {
	STAT_SAMPLES = 0,            // every time the program ran
	STAT_IDLE_DROPPED = 1,       // idle samples dropped on request (not a loss)
	STAT_FILTERED = 2,           // samples outside the include sets (not a loss)
	STAT_LOST_USER_STACK = 3,    // user stack not stored: stacks_user map full
	STAT_LOST_KERNEL_STACK = 4,  // kernel stack not stored: stacks_kern map full
	STAT_LOST_COUNTS_FULL = 5,   // sample dropped: counts map full
	STAT_LOST_PID_EVENT = 6,     // new-process notification dropped: ring buffer full
	STAT_UNWOUND = 7,            // user stacks walked with unwind tables
	STAT_UNWIND_MAX_FRAMES = 8,  // ... truncated at UNWIND_MAX_FRAMES
	STAT_UNWIND_READ = 9,        // ... truncated: reading the user stack failed
	STAT_UNWIND_BAD_FRAME = 10,  // ... truncated: a frame did not move towards the callers
	STAT_UNWIND_NO_LR = 11,      // ... truncated: arm64 return address in LR beyond the leaf
	STAT_LOST_UNWOUND_FULL = 12, // unwound user stack not stored: stacks_unwound map full
	STAT_EXCLUDED = 13,          // samples of excluded processes or cgroups (not a loss)
	// User stacks whose leaf was walked by frame pointer without a table,
	// so its caller is marked unknown (see enum unwind_caller), by reason:
	STAT_CALLER_NO_TABLE = 14,   // ... the leaf's file has no usable table
	STAT_CALLER_PENDING = 15,    // ... the leaf's file table is being built
	STAT_CALLER_NO_MAPPING = 16, // ... the kernel could not say which mapping holds the leaf
	STAT_FILE_REQUESTS = 17,     // files whose tables were requested (unwind_requests)
	STAT_LOST_FILE_REQUEST = 18, // file requests not sent: unwind_requests or unwind_files full
	STAT_DEFERRED = 19,          // samples whose user stack user space finishes (struct deferred_sample)
	STAT_LOST_DEFERRED = 20,     // ... not sent (the deferred ring buffer was full): kept as the kernel walked it
	STAT_MAX = 24,
};

struct sample_key {
	__u32 pid;            // thread group id (what user space calls the pid)
	__u32 tid;            // thread id
	__s32 kern_stack_id;  // STACK_HASHED, STACK_NONE or STACK_LOST
	__s32 user_stack_id;  // STACK_HASHED, STACK_UNWOUND, STACK_NONE or STACK_LOST
	char comm[TASK_COMM_LEN];
	__u64 user_stack_hash; // key in stacks_user{0,1} (STACK_HASHED) or stacks_unwound{0,1} (STACK_UNWOUND)
	__u64 kern_stack_hash; // key in stacks_kern{0,1} when kern_stack_id is STACK_HASHED
};

// A sample whose user stack walk met code whose table is on the way (see
// unwind_state.defer_at): the registers of that frame and a copy of the
// stack above them, for user space to walk on from there when the table is
// in; the kernel stack and the whole walk as the kernel did it (by frame
// pointer from that frame on) ride along, to fall back on. A record in the
// ring buffer ends after its stack_len bytes of stack.
#define DEFER_STACK_BYTES 8192
struct deferred_sample {
	__u32 pid, tid;
	char comm[TASK_COMM_LEN];
	__u64 sp, fp, lr;     // of the frame to walk on from, pcs[at-1]
	__u32 at;             // 1 + the index of that frame in pcs
	__u32 flags;          // UNWIND_F_EXACT_PC: its pc is not a return address; UNWIND_F_DEFER_NO_MAPPING
	__u32 n;              // user addresses in pcs, as the kernel walked them
	__u32 stop;           // enum unwind_stop of the kernel's walk
	__u32 leaf_caller;    // enum unwind_caller of the kernel's walk
	__u32 kern_n;         // kernel addresses in kern
	__u32 stack_len;      // bytes of the stack from sp in stack
	__u32 _pad;
	__u64 kern[MAX_STACK_DEPTH];
	__u64 pcs[UNWIND_MAX_FRAMES];
	__u8 stack[DEFER_STACK_BYTES];
};

struct scorch_config {
	__u32 active_set;     // 0 or 1: the map set samples go to
	__u32 drop_idle;      // 1: don't record the idle task (pid 0)
	__u32 filter_include; // 1: record only processes and cgroups marked FILTER_INCLUDE
	__u32 unwind;         // 1: walk user stacks with unwind tables where loaded
	__u32 filter_pids;    // 1: look the process up in pid_filter
	__u32 filter_cgroups; // 1: look the task's cgroup up in cgroup_filter
};

// Values of pid_filter and cgroup_filter entries (bit flags).
enum filter_flag {
	FILTER_INCLUDE = 1,   // record this process / cgroup (the include set)
	FILTER_EXCLUDE = 2,   // never record it; wins over FILTER_INCLUDE
};

// Events for user space about process lifecycles, so it can read
// /proc/PID/maps while the process is still alive.
enum event_type {
	EVENT_NEW_PID = 1,    // first sample of a process (since the last exec)
	EVENT_EXEC = 2,       // a process called exec: its mappings changed
	EVENT_EXIT = 3,       // a process (thread group) exited
};

// An event also says what user space would otherwise read from /proc for
// each new process (on a host starting a hundred programs a second, reading
// /proc/PID/stat and /proc/PID/cgroup for each cost more than sampling):
// the process's start time, which tells it from a later one with the same
// pid, its cgroup and its name.
struct event {
	__u32 type;
	__u32 pid;
	__u64 start_boottime; // of the thread-group leader, ns since boot; 0 unknown
	__u64 cgroup_id;      // the current task's cgroup v2 id
	char comm[16];        // the thread-group leader's
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scorch_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// Deferred samples (struct deferred_sample). User space resizes it (one
// page in the frame-pointer-only object, which sends none).
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} deferred SEC(".maps");

// Per-CPU room to build a deferred sample in: it goes to the ring buffer
// only as long as its stack copy (bpf_ringbuf_output), so that a burst of
// new short processes fills it more slowly than whole records would
// (defined in the frame-pointer-only object too, which uses neither).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct deferred_sample);
} deferred_scratch SEC(".maps");

// Map sizes are defaults: user space resizes them before loading
// (internal/sampler, Options.StackMapEntries).
#define COUNTS_MAP(name)                          \
	struct {                                  \
		__uint(type, BPF_MAP_TYPE_HASH);  \
		__uint(max_entries, 32768);       \
		__type(key, struct sample_key);   \
		__type(value, __u64);             \
	} name SEC(".maps")

// A stack walked through frame pointers: addresses innermost first, the
// unused tail zeroed (bpf_get_stack zero-fills it).
struct raw_stack {
	__u64 pcs[MAX_STACK_DEPTH];
};

#define STACK_MAP(name, entries)                          \
	struct {                                          \
		__uint(type, BPF_MAP_TYPE_HASH);          \
		__uint(max_entries, entries);             \
		__type(key, __u64);                       \
		__type(value, struct raw_stack);          \
	} name SEC(".maps")

// Per-CPU scratch space for bpf_get_stack (too big for the BPF stack).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct raw_stack);
} stack_scratch SEC(".maps");

// Unwound user stacks, keyed by unwind_hash. The value is the unwinder's
// struct unwind_stack (frame count, stop reason, addresses); user space
// reads the first n addresses.
#define UNWOUND_MAP(name)                             \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_HASH);      \
		__uint(max_entries, 16384);           \
		__type(key, __u64);                   \
		__type(value, struct unwind_stack);   \
	} name SEC(".maps")

COUNTS_MAP(counts0);
COUNTS_MAP(counts1);
STACK_MAP(stacks_user0, 16384);
STACK_MAP(stacks_user1, 16384);
STACK_MAP(stacks_kern0, 16384);
STACK_MAP(stacks_kern1, 16384);
UNWOUND_MAP(stacks_unwound0);
UNWOUND_MAP(stacks_unwound1);

// The process filter: thread group id -> enum filter_flag bits. The exit
// hook removes the entry of a process that exits (its pid may be reused);
// the exec hook removes FILTER_EXCLUDE entries (what the process runs
// changed: user space decides again).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

// The cgroup filter: cgroup v2 id (bpf_get_current_cgroup_id, the inode of
// the cgroup's directory) -> enum filter_flag bits. Only the sampled task's
// own cgroup is looked up, not its ancestors: to cover a subtree, user space
// lists every cgroup in it (one lookup per sample instead of one per level).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

// Processes already announced to user space by EVENT_NEW_PID.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} seen_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// sync_barrier is never read by the program. User space updates it after
// flipping config.active_set: the kernel waits for every running BPF program
// to finish (synchronize_rcu) before an update of a map-in-map returns, so
// once it returns no sample can still be writing to the old set.
struct barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} barrier_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct barrier_inner);
} sync_barrier SEC(".maps") = {
	.values = {&barrier_inner},
};

// Make the types user space decodes part of the object's BTF, so bpf2go
// generates them.
const struct event *unused_event __attribute__((unused));
const enum stat_key *unused_stat_key __attribute__((unused));
const enum event_type *unused_event_type __attribute__((unused));
const struct unwind_stack *unused_unwind_stack __attribute__((unused));
const struct unwind_request *unused_unwind_request __attribute__((unused));
const struct unwind_file *unused_unwind_file __attribute__((unused));
const enum unwind_caller *unused_unwind_caller __attribute__((unused));
const enum unwind_file_state *unused_unwind_file_state __attribute__((unused));
const enum unwind_stop *unused_unwind_stop __attribute__((unused));
const struct deferred_sample *unused_deferred_sample __attribute__((unused));
const enum filter_flag *unused_filter_flag __attribute__((unused));
const struct raw_stack *unused_raw_stack __attribute__((unused));
const enum unwind_mapping_kind *unused_unwind_mapping_kind __attribute__((unused));

static __always_inline void stat_inc(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &key);
	if (v)
		*v += 1;
}

static __always_inline __attribute__((unused)) void stat_add(__u32 key, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &key);
	if (v)
		*v += n;
}

// emit_event tells user space of a process event. Exits go without a
// wakeup (BPF_RB_NO_WAKEUP): user space acts on them at its next drain, and
// its reader wakes every 200 ms anyway (sampler.readRing), so waking it for
// each of a churning host's exits would only cost.
static __always_inline void emit_event(__u32 type, __u32 pid)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_LOST_PID_EVENT);
		return;
	}
	e->type = type;
	e->pid = pid;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	e->start_boottime = 0;
	if (bpf_core_field_exists(leader->start_boottime)) // Linux 5.5
		e->start_boottime = BPF_CORE_READ(leader, start_boottime);
	e->cgroup_id = bpf_get_current_cgroup_id();
	if (BPF_CORE_READ_INTO(&e->comm, leader, comm))
		e->comm[0] = 0;
	bpf_ringbuf_submit(e, type == EVENT_EXIT ? BPF_RB_NO_WAKEUP : 0);
}

// hashed_stack takes the kernel stack (flags 0) or the frame-pointer user
// stack (BPF_F_USER_STACK) of the sample, stores it in stacks under a 64-bit
// hash of its addresses and returns STACK_HASHED with *hash set, STACK_NONE
// when there is no such stack, or STACK_LOST (counted as lost_stat) when the
// map is full.
static __always_inline __s32 hashed_stack(struct bpf_perf_event_data *ctx, void *stacks, __u64 flags,
					  __u32 lost_stat, __u64 *hash)
{
	__u32 zero = 0;
	struct raw_stack *st = bpf_map_lookup_elem(&stack_scratch, &zero);
	if (!st)
		return STACK_NONE;
	long len = bpf_get_stack(ctx, st->pcs, sizeof(st->pcs), flags);
	if (len <= 0)
		return STACK_NONE; // EFAULT or empty: no stack of that kind here
	__u32 n = (__u32)len / sizeof(__u64);
	// FNV-1a over the addresses, finished with murmur3's fmix64 (as
	// unwind_hash does for unwound stacks).
	__u64 h = 0xcbf29ce484222325ull;
	for (__u32 i = 0; i < MAX_STACK_DEPTH; i++) {
		if (i >= n)
			break;
		h = (h ^ st->pcs[i]) * 0x100000001b3ull;
	}
	h ^= n;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	if (!bpf_map_lookup_elem(stacks, &h)) {
		long err = bpf_map_update_elem(stacks, &h, st, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST: another CPU stored it first */) {
			stat_inc(lost_stat);
			return STACK_LOST;
		}
	}
	*hash = h;
	return STACK_HASHED;
}

#ifndef SCORCH_FP_ONLY
// The user registers as the uapi lays them out (bpf_user_pt_regs_t): the
// perf event context starts with them, and so does the kernel's struct
// pt_regs. Not CO-RE relocated: this layout is ABI.
#if defined(__TARGET_ARCH_x86)
struct uregs {
	__u64 r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	__u64 ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#define UREGS_USER_MODE(u) (((u)->cs & 3) == 3)
#define UREGS_PC(u) ((u)->ip)
#define UREGS_SP(u) ((u)->sp)
#define UREGS_FP(u) ((u)->bp)
#define UREGS_LR(u) 0
#else
struct uregs {
	__u64 regs[31];
	__u64 sp, pc, pstate;
};
#define UREGS_USER_MODE(u) (((u)->pstate & 0xf) == 0) // PSR_MODE_EL0t
#define UREGS_PC(u) ((u)->pc)
#define UREGS_SP(u) ((u)->sp)
#define UREGS_FP(u) ((u)->regs[29])
#define UREGS_LR(u) ((u)->regs[30])
#endif

// user_regs gets the user-mode registers of the interrupted task: from the
// perf event context when the sample hit user mode, else from the pt_regs the
// kernel saved on entry (a system call, a fault, an interrupt). Returns 0 when
// they cannot be read.
static __always_inline int user_regs(struct bpf_perf_event_data *ctx, __u64 *pc, __u64 *sp, __u64 *fp, __u64 *lr)
{
	const struct uregs *c = (const struct uregs *)ctx;
	if (UREGS_USER_MODE(c)) {
		*pc = UREGS_PC(c);
		*sp = UREGS_SP(c);
		*fp = UREGS_FP(c);
		*lr = UREGS_LR(c);
		return 1;
	}
	struct uregs u;
	if (bpf_probe_read_kernel(&u, sizeof(u), (const void *)bpf_task_pt_regs(bpf_get_current_task_btf())))
		return 0;
	*pc = UREGS_PC(&u);
	*sp = UREGS_SP(&u);
	*fp = UREGS_FP(&u);
	*lr = UREGS_LR(&u);
	return 1;
}

// defer_stack_limit is how much of the stack above sp a deferred sample
// copies: DEFER_STACK_BYTES, or for a process's main thread no further
// than the top of its stack (mm->start_stack, where argc lies; every frame
// is below it), in whole KiB: the stack of a shallow program in 1 KiB
// instead of 8.
static __always_inline __u32 defer_stack_limit(__u64 sp)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->pid != task->tgid)
		return DEFER_STACK_BYTES;
	__u64 top = BPF_CORE_READ(task, mm, start_stack); // 0 without an mm
	if (top <= sp || top - sp > DEFER_STACK_BYTES - 64)
		return DEFER_STACK_BYTES;
	return ((__u32)(top - sp) + 64 + 1023) & ~1023U; // argc and a little above, in 1 KiB pieces
}

// defer_sample sends the sample to user space to finish its user stack
// (see struct deferred_sample). Returns 0 when the ring buffer is full.
static __always_inline int defer_sample(struct bpf_perf_event_data *ctx, const struct unwind_state *st,
					const struct sample_key *key)
{
	__u32 zero = 0;
	struct deferred_sample *r = bpf_map_lookup_elem(&deferred_scratch, &zero);
	if (!r)
		return 0;
	r->pid = key->pid;
	r->tid = key->tid;
	__builtin_memcpy(r->comm, key->comm, sizeof(r->comm));
	r->sp = st->defer_sp;
	r->fp = st->defer_fp;
	r->lr = st->lr;
	r->at = st->defer_at;
	r->flags = st->defer_flags;
	r->stop = st->stack.stop;
	r->leaf_caller = st->stack.leaf_caller;
	r->_pad = 0;
	r->n = st->stack.n > UNWIND_MAX_FRAMES ? UNWIND_MAX_FRAMES : st->stack.n;
	if (bpf_probe_read_kernel(r->pcs, sizeof(r->pcs), st->stack.pcs))
		r->n = 0;
	long kn = bpf_get_stack(ctx, r->kern, sizeof(r->kern), 0);
	r->kern_n = kn > 0 ? (__u32)kn / sizeof(__u64) : 0;
	// The stack above sp, in 1 KiB pieces while they read, then smaller
	// ones up to the end of the stack's mapping (a whole piece across it
	// fails).
	__u64 sp = st->defer_sp;
	__u32 limit = defer_stack_limit(sp);
	__u32 got = 0, enough = 0;
	for (__u32 i = 0; i < DEFER_STACK_BYTES / 1024; i++) {
		if (i * 1024 >= limit) {
			enough = 1;
			break;
		}
		if (bpf_probe_read_user(&r->stack[i * 1024], 1024, (const void *)(sp + i * 1024)))
			break;
		got = (i + 1) * 1024;
	}
	for (__u32 sz = 512; sz >= 8 && !enough; sz /= 2) {
		if (got > DEFER_STACK_BYTES - sz)
			break;
		if (!bpf_probe_read_user(&r->stack[got], sz, (const void *)(sp + got)))
			got += sz;
	}
	r->stack_len = got;
	__u64 size = __builtin_offsetof(struct deferred_sample, stack) + (__u64)got;
	if (size > sizeof(*r))
		size = sizeof(*r);
	return bpf_ringbuf_output(&deferred, r, size, 0) == 0;
}

// unwind_tables walks the user stack with the process's unwind tables and
// stores it in the set's stacks_unwound map. It returns the stack id for
// the sample key (STACK_UNWOUND, STACK_DEFERRED or STACK_LOST) and sets
// *hash.
static __always_inline __s32 unwind_tables(struct bpf_perf_event_data *ctx, const struct sample_key *key, __u32 set,
					  __u64 *hash, __u32 *learned)
{
	__u64 pc, sp, fp, lr;
	if (!user_regs(ctx, &pc, &sp, &fp, &lr))
		return STACK_NONE;
	struct unwind_state *st = unwind_user(key->pid, pc, sp, fp, lr, 1);
	if (!st)
		return STACK_NONE;
	stat_inc(STAT_UNWOUND);
	*learned = st->vma_used == 2;
	switch (st->stack.stop) {
	case UNWIND_STOP_MAX_FRAMES:
		stat_inc(STAT_UNWIND_MAX_FRAMES);
		break;
	case UNWIND_STOP_READ:
		stat_inc(STAT_UNWIND_READ);
		break;
	case UNWIND_STOP_BAD_FRAME:
		stat_inc(STAT_UNWIND_BAD_FRAME);
		break;
	case UNWIND_STOP_NO_LR:
		stat_inc(STAT_UNWIND_NO_LR);
		break;
	}
	switch (st->stack.leaf_caller) {
	case UNWIND_CALLER_NO_TABLE:
		stat_inc(STAT_CALLER_NO_TABLE);
		break;
	case UNWIND_CALLER_PENDING:
		stat_inc(STAT_CALLER_PENDING);
		break;
	case UNWIND_CALLER_NO_MAPPING:
		stat_inc(STAT_CALLER_NO_MAPPING);
		break;
	}
	if (st->requests)
		stat_add(STAT_FILE_REQUESTS, st->requests);
	if (st->lost_requests)
		stat_add(STAT_LOST_FILE_REQUEST, st->lost_requests);
	if (st->defer_at) {
		// Code in a mapping the kernel has not learned is likely new to
		// user space too (a library mapped since the process was
		// announced): announce it again, so that its mappings are read
		// while it lives.
		if (st->defer_flags & UNWIND_F_DEFER_NO_MAPPING)
			*learned = 1;
		if (defer_sample(ctx, st, key)) {
			stat_inc(STAT_DEFERRED);
			return STACK_DEFERRED;
		}
		stat_inc(STAT_LOST_DEFERRED); // kept as the kernel walked it
	}
	__u64 h = unwind_hash(st);
	void *stacks = set == 0 ? (void *)&stacks_unwound0 : (void *)&stacks_unwound1;
	if (!bpf_map_lookup_elem(stacks, &h)) {
		long err = bpf_map_update_elem(stacks, &h, &st->stack, BPF_NOEXIST);
		if (err && err != -17 /* EEXIST: another CPU stored it first */) {
			stat_inc(STAT_LOST_UNWOUND_FULL);
			return STACK_LOST;
		}
	}
	*hash = h;
	return STACK_UNWOUND;
}
#endif /* !SCORCH_FP_ONLY */

// sample_filter decides whether a sample of process pid is recorded. It
// returns 0 to record it, else the stat key that counts why not. A sample
// is recorded when the include sets are empty or its process or cgroup is
// in one, and neither is excluded. The idle task (tid 0) is in no cgroup
// as far as filters go.
static __always_inline __u32 sample_filter(struct scorch_config *cfg, __u32 pid, __u32 tid)
{
	__u8 flags = 0;
	if (cfg->filter_pids) {
		__u8 *f = bpf_map_lookup_elem(&pid_filter, &pid);
		if (f)
			flags = *f;
	}
	if (cfg->filter_cgroups && tid != 0) {
		__u64 cg = bpf_get_current_cgroup_id();
		__u8 *f = bpf_map_lookup_elem(&cgroup_filter, &cg);
		if (f)
			flags |= *f;
	}
	if (flags & FILTER_EXCLUDE)
		return STAT_EXCLUDED;
	if (cfg->filter_include && !(flags & FILTER_INCLUDE))
		return STAT_FILTERED;
	return 0;
}

SEC("perf_event")
int scorch_sample(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	struct scorch_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;

	stat_inc(STAT_SAMPLES);

	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	__u32 tid = (__u32)id;

	if (tid == 0 && cfg->drop_idle) {
		stat_inc(STAT_IDLE_DROPPED);
		return 0;
	}
	__u32 why = sample_filter(cfg, pid, tid);
	if (why) {
		stat_inc(why);
		return 0;
	}

	struct sample_key key = {};
	__u32 learned = 0;
	key.pid = pid;
	key.tid = tid;
	bpf_get_current_comm(&key.comm, sizeof(key.comm));

	// The idle task and kernel threads have no user stack: keep them as
	// kernel-only stacks.
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned int tflags = BPF_CORE_READ(task, flags);
	int user = tid != 0 && !(tflags & PF_KTHREAD);
	// A task in exit (do_exit tears its memory down) keeps its kernel
	// stack only: its user stack is being unmapped under the walk.
	if (tflags & PF_EXITING)
		user = 0;

	__u32 set = cfg->active_set;
	key.kern_stack_id = hashed_stack(ctx, set == 0 ? (void *)&stacks_kern0 : (void *)&stacks_kern1, 0,
					 STAT_LOST_KERNEL_STACK, &key.kern_stack_hash);
#ifndef SCORCH_FP_ONLY
	if (user && cfg->unwind)
		key.user_stack_id = unwind_tables(ctx, &key, set, &key.user_stack_hash, &learned);
	else
#endif
	if (user)
		key.user_stack_id = hashed_stack(ctx, set == 0 ? (void *)&stacks_user0 : (void *)&stacks_user1,
						 BPF_F_USER_STACK, STAT_LOST_USER_STACK, &key.user_stack_hash);
	else
		key.user_stack_id = STACK_NONE;

	void *counts = set == 0 ? (void *)&counts0 : (void *)&counts1;
	__u64 *val = key.user_stack_id == STACK_DEFERRED ? 0 : bpf_map_lookup_elem(counts, &key);
	if (key.user_stack_id == STACK_DEFERRED) {
		// Counted by user space when it has finished the stack.
	} else if (val) {
		__sync_fetch_and_add(val, 1);
	} else {
		__u64 one = 1;
		long err = bpf_map_update_elem(counts, &key, &one, BPF_NOEXIST);
		if (err == -17 /* EEXIST: another CPU inserted it first */) {
			val = bpf_map_lookup_elem(counts, &key);
			if (val)
				__sync_fetch_and_add(val, 1);
		} else if (err) {
			stat_inc(STAT_LOST_COUNTS_FULL);
		}
	}

	if (user) {
		// Announced again when the walk met code in a mapping the kernel
		// had not seen for the process (a library ld.so or dlopen mapped
		// since): user space reads its mappings while it lives.
		__u8 *seen = bpf_map_lookup_elem(&seen_pids, &pid);
		if (!seen || learned) {
			__u8 one = 1;
			bpf_map_update_elem(&seen_pids, &pid, &one, BPF_ANY);
			emit_event(EVENT_NEW_PID, pid);
		}
	}
	return 0;
}

// Process lifecycle hooks. Raw tracepoints need neither kprobes nor tracefs.
// The current task is the one that execs or exits.
SEC("raw_tracepoint/sched_process_exec")
int scorch_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	// Only processes user space holds something of hear of their exec:
	// those announced (seen_pids: it read their mappings) and those the
	// filter excludes by pid (it rescans). On a host running hundreds of
	// short programs a second, waking user space for every exec cost more
	// than what it did with them. One whose announcement the LRU dropped
	// is announced again at its next sample, mappings reread.
	int tell = bpf_map_lookup_elem(&seen_pids, &pid) != NULL;
	if (tell)
		bpf_map_delete_elem(&seen_pids, &pid);
	__u8 *f = bpf_map_lookup_elem(&pid_filter, &pid);
	if (f && (*f & FILTER_EXCLUDE)) {
		bpf_map_delete_elem(&pid_filter, &pid);
		tell = 1;
	}
	if (tell)
		emit_event(EVENT_EXEC, pid);
#ifndef SCORCH_FP_ONLY
	// Learn the new program's mappings and ask for its tables now, before
	// its first sample. The entry point the kernel set is the
	// interpreter's (ld.so), or the program's when it is static.
	// Only for processes the filter records (record --pid, the agent's
	// --include/--exclude): others never need tables.
	__u32 zero = 0;
	struct scorch_config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !cfg->unwind || sample_filter(cfg, pid, (__u32)bpf_get_current_pid_tgid()))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct uregs u;
	__u64 entry = 0;
	if (!bpf_probe_read_kernel(&u, sizeof(u), (const void *)bpf_task_pt_regs(task)))
		entry = UREGS_PC(&u);
	unwind_exec(pid, BPF_CORE_READ(task, mm, start_code), entry);
#endif
	return 0;
}

SEC("raw_tracepoint/sched_process_exit")
int scorch_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	if (pid != (__u32)id)
		return 0; // a thread, not the whole process
	bpf_map_delete_elem(&pid_filter, &pid); // the pid may be reused
	if (!bpf_map_lookup_elem(&seen_pids, &pid)) {
#ifndef SCORCH_FP_ONLY
		bpf_map_delete_elem(&unwind_procs, &pid);
#endif
		return 0; // never sampled: nothing for user space to release
	}
	// A sampled process keeps its unwind_procs entry, the mappings the
	// walker learned, until user space has named its last samples and
	// forgets it (Sampler.Forget): a 50 ms process is gone long before
	// its samples are drained, and its /proc/PID/maps with it. A new
	// process with the same pid never sees the entry (scorch_fork
	// replaces it).
	bpf_map_delete_elem(&seen_pids, &pid);
	emit_event(EVENT_EXIT, pid);
	return 0;
}

// A new process (not a thread) starts with its parent's mappings. (A
// no-op in the frame-pointer-only object, which declares it so that both
// objects load into one set of bindings.)
SEC("raw_tracepoint/sched_process_fork")
int scorch_fork(struct bpf_raw_tracepoint_args *ctx)
{
#ifndef SCORCH_FP_ONLY
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid != ctgid)
		unwind_fork(ptgid, ctgid);
#endif
	return 0;
}
