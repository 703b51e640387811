package sampler

import (
	"errors"
	"math/bits"
	"os"

	"github.com/cilium/ebpf"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
)

// The table walk learns each process's executable mappings in the kernel
// (bpf_find_vma: start, end, page offset, and the file's device and inode),
// in the unwind_procs map. A sampled process keeps its entry after it exits,
// until Forget: its samples are named after it is gone, when
// /proc/PID/maps no longer exists, and for a process that lived 50 ms on a
// busy host the symbolizer may never have read it, or read it before the
// dynamic loader had mapped the libraries its later samples ran in.

// KernelMappings returns the executable mappings of process pid as the
// kernel's walker learned them: Start, End, Offset, Dev (major<<32 | minor,
// as process.ReadMaps gives it) and Inode; Path is "[vdso]" for the vDSO
// and "" otherwise (anonymous memory has Inode 0). It returns none when the
// walker knows none (the frame-pointer program learns none).
func (s *Sampler) KernelMappings(pid uint32) []process.Mapping {
	if s.tables == nil {
		return nil
	}
	return kernelMappings(s.objs.UnwindProcs, pid)
}

// kernelMappings are the executable mappings of pid the kernel's walker
// learned, from procs (unwind_procs), as KernelMappings describes them.
func kernelMappings(procs *ebpf.Map, pid uint32) []process.Mapping {
	var p bpf.ScorchUnwindProc
	if err := procs.Lookup(pid, &p); err != nil {
		return nil
	}
	out := make([]process.Mapping, 0, p.N)
	for i := 0; i < int(min(p.N, uint32(len(p.M)))); i++ {
		km := &p.M[i]
		m := process.Mapping{Start: km.Start, End: km.End, Perm: process.Read | process.Exec, Offset: km.Pgoff << pageShift}
		switch km.Kind {
		case uint32(bpf.ScorchUnwindMappingKindUNWIND_MAPPING_FILE):
			m.Dev = userDev(km.File.Dev)
			m.Inode = km.File.Ino
		case uint32(bpf.ScorchUnwindMappingKindUNWIND_MAPPING_VDSO):
			m.Path = "[vdso]"
		}
		out = append(out, m)
	}
	return out
}

// HoldsDeferred reports whether deferred samples of process pid are in user
// space and not yet returned by a drain (see Stats.Deferred): until they
// are, what names them must be kept (Forget, and the symbolizer's state).
func (s *Sampler) HoldsDeferred(pid uint32) bool {
	return s.tables != nil && s.tables.held.holds(pid)
}

// Forget deletes what the kernel keeps of process pid for naming its samples
// (see KernelMapping); call it once they are named.
func (s *Sampler) Forget(pid uint32) {
	if s.tables == nil {
		return
	}
	if err := s.objs.UnwindProcs.Delete(pid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		s.log.Debug("forget process in the kernel", "pid", pid, "err", err)
	}
}

// pageShift is log2 of the page size: the BPF program's unwind_page_shift,
// and what converts the page offsets bpf_find_vma gives to bytes.
var pageShift = bits.TrailingZeros(uint(os.Getpagesize()))
