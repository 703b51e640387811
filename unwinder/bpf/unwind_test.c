// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// Compile check for unwind.h, and the program the Go tests load to check the
// verifier accepts it: a perf_event program that unwinds the user stack of
// the process in unwind_test_target and stores the result in
// unwind_test_out. Built with -I for bpf/src/include (scorch_kernel.h).
#include "scorch_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "unwind.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} unwind_test_target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unwind_state);
} unwind_test_out SEC(".maps");

SEC("perf_event")
int unwind_test(struct bpf_perf_event_data *ctx)
{
	__u32 zero = 0;
	__u32 *target = bpf_map_lookup_elem(&unwind_test_target, &zero);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!target || *target != tgid)
		return 0;
	/* The sample must have interrupted user mode for ctx->regs to be the
	 * user registers (the test workload does not make syscalls while hot). */
	bpf_user_pt_regs_t *regs = &ctx->regs;
#if defined(__TARGET_ARCH_arm64)
	if (regs->pstate & 0xf)
		return 0;
	struct unwind_state *st = unwind_user(tgid, regs->pc, regs->sp, regs->regs[29], regs->regs[30], 0);
#else
	if ((regs->cs & 3) != 3)
		return 0;
	struct unwind_state *st = unwind_user(tgid, regs->ip, regs->sp, regs->bp, 0, 0);
#endif
	if (st)
		bpf_map_update_elem(&unwind_test_out, &zero, st, BPF_ANY);
	return 0;
}
