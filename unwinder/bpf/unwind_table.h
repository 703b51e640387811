/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The unwind table row, as written by Go's unwinder.Table.AppendBinary and
 * read by unwind.h. One row is 8 bytes, little endian, rows sorted by pc.
 * A row applies from its pc up to the next row's pc.
 *
 *   pc   u32  start of the range, as an ELF virtual address (runtime PC minus
 *             the mapping's load bias). Tables cover ELF files below 4 GiB.
 *   cfa  u16  bits 0-2: kind (enum unwind_kind)
 *             bit  3  : CFA base register: 0 = SP (rsp/sp), 1 = FP (rbp/x29)
 *             bits 4-15: CFA offset / 8, unsigned (0..32760 bytes)
 *   fp   s8   the caller's FP (rbp/x29) is saved at CFA + 8*fp; 0 = the FP
 *             register is unchanged by this frame. For UNWIND_KIND_PLT: the
 *             PLT threshold instead (see below).
 *   ra   s8   the return address is saved at CFA + 8*ra; 0 = it is still in
 *             the link register (arm64 leaf functions and prologues; only
 *             usable for the innermost frame). Always -1 on amd64.
 *
 * Why this is enough: on amd64 the return address is always at CFA-8 and
 * the CFA is rsp- or rbp-based in all but a handful of hand-written
 * functions; stack slots are 8-aligned, so offsets are stored in words.
 * On arm64 the CFA is sp- or x29-based and x29/x30 are saved in 8-aligned
 * slots or x30 is still live in the register. Anything else (CFA from other
 * registers, DWARF expressions other than the PLT/sigreturn ones, frames
 * over 32 KiB) is UNWIND_KIND_UNSUPPORTED: unwinders use the FP chain there.
 */
#ifndef SCORCH_UNWIND_TABLE_H
#define SCORCH_UNWIND_TABLE_H

enum unwind_kind {
	/* No usable CFI: fall back to the frame-pointer chain. */
	UNWIND_KIND_UNSUPPORTED = 0,
	/* CFA = reg + off; RA at CFA + 8*ra (or in LR); FP at CFA + 8*fp or unchanged. */
	UNWIND_KIND_CFA = 1,
	/* A standard frame record: CFA = FP + 16, RA at CFA-8, FP at CFA-16. */
	UNWIND_KIND_FRAME_POINTER = 2,
	/* Outermost frame (_start, thread entry, RA undefined): stop. */
	UNWIND_KIND_END_OF_STACK = 3,
	/* amd64 lazy PLT: CFA = SP + off + ((pc & 15) >= fp ? 8 : 0); RA at CFA-8. */
	UNWIND_KIND_PLT = 4,
	/* Signal trampoline (__restore_rt): SP points to the kernel's signal
	 * frame; PC, SP and FP of the interrupted code are read from it. */
	UNWIND_KIND_SIGNAL = 5,
	/* A frame record (as FRAME_POINTER) whose caller runs on another
	 * stack (Go's asmcgocall calling C on the system stack): the caller's
	 * SP need not be above this frame's. */
	UNWIND_KIND_STACK_SWITCH = 6,
};

#define UNWIND_CFA_REG_SP 0
#define UNWIND_CFA_REG_FP 1

struct unwind_row {
	__u32 pc;
	__u16 cfa;
	__s8 fp;
	__s8 ra;
};

#define UNWIND_ROW_KIND(r) ((r)->cfa & 7)
#define UNWIND_ROW_CFA_REG(r) (((r)->cfa >> 3) & 1)
#define UNWIND_ROW_CFA_OFF(r) ((__u64)((r)->cfa >> 4) << 3)

_Static_assert(sizeof(struct unwind_row) == 8, "unwind_row must be 8 bytes");

#endif /* SCORCH_UNWIND_TABLE_H */
