/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The few kernel types Scorch's BPF programs read, declared by hand instead
 * of a generated vmlinux.h so that the same source builds for amd64 and arm64
 * from this one file. Every struct is marked preserve_access_index: field
 * offsets are relocated at load time against the running kernel's BTF
 * (CO-RE), so only the names and types of the fields used here matter.
 */
#ifndef SCORCH_KERNEL_H
#define SCORCH_KERNEL_H

#include <linux/types.h>
#include <linux/bpf.h>

/* Tell bpf_tracing.h to use the kernel's (not the uapi's) pt_regs names. */
#define __VMLINUX_H__

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
} __attribute__((preserve_access_index));
typedef struct pt_regs bpf_user_pt_regs_t;
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
struct pt_regs {
	union {
		struct user_pt_regs user_regs;
		struct {
			__u64 regs[31];
			__u64 sp;
			__u64 pc;
			__u64 pstate;
		};
	};
	__u64 orig_x0;
} __attribute__((preserve_access_index));
typedef struct user_pt_regs bpf_user_pt_regs_t;
#else
#error "unsupported architecture: define __TARGET_ARCH_x86 or __TARGET_ARCH_arm64"
#endif

struct bpf_perf_event_data {
	bpf_user_pt_regs_t regs;
	__u64 sample_period;
	__u64 addr;
};

struct super_block {
	__u32 s_dev; /* dev_t: MAJOR << 20 | MINOR */
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	__u32 i_generation;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

/* mm_context_t: the vDSO's address is a member on amd64 and arm64. */
typedef struct {
	void *vdso;
} __attribute__((preserve_access_index)) mm_context_t;

struct mm_struct {
	mm_context_t context;
	struct file *exe_file;
	unsigned long start_code;
	unsigned long start_stack;
} __attribute__((preserve_access_index));

struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
	struct mm_struct *vm_mm;
	unsigned long vm_pgoff;
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int flags;
	struct mm_struct *mm;
	int pid;
	int tgid;
	struct task_struct *group_leader;
	__u64 start_boottime; /* Linux 5.5; read only if the kernel has it */
	char comm[16];
} __attribute__((preserve_access_index));

/* include/linux/sched.h */
#define PF_EXITING 0x00000004
#define PF_KTHREAD 0x00200000

#endif /* SCORCH_KERNEL_H */
