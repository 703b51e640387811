package sampler

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"

	"github.com/scorch-profiler/scorch/bpf"
)

// Program names the BPF program a Sampler loaded. Both come from
// bpf/src/scorch.bpf.c.
type Program string

const (
	// ProgramTables walks user stacks with unwind tables kept per file,
	// through frame pointers where a file has none (bpf.LoadScorch). Needs
	// Linux 5.17 (bpf_loop, bpf_find_vma).
	ProgramTables Program = "tables"
	// ProgramFramePointers walks every user stack through frame pointers
	// (bpf_get_stack), which stop at the first function built without
	// them (bpf.LoadScorchFp, built with -DSCORCH_FP_ONLY). Needs Linux 5.8.
	ProgramFramePointers Program = "frame-pointers"
)

// kernelFeature is one thing the kernel must have, probed by loading a
// minimal program or creating a minimal map (package features).
type kernelFeature struct {
	name  string // what the user is told is missing
	since string // the upstream release that added it
	probe func() error
}

// requiredFeatures are what both programs need. Kernel BTF, which CO-RE
// needs too, is checked by Preflight (/sys/kernel/btf/vmlinux).
var requiredFeatures = []kernelFeature{
	{"BPF programs on perf events (BPF_PROG_TYPE_PERF_EVENT)", "4.9", func() error { return features.HaveProgramType(ebpf.PerfEvent) }},
	{"BPF map-in-map (BPF_MAP_TYPE_ARRAY_OF_MAPS)", "4.12", func() error { return features.HaveMapType(ebpf.ArrayOfMaps) }},
	{"bpf_get_stack", "4.18", func() error { return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnGetStack) }},
	{"bpf_probe_read_kernel", "5.5", func() error { return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnProbeReadKernel) }},
	{"BPF ring buffers (BPF_MAP_TYPE_RINGBUF)", "5.8", func() error { return features.HaveMapType(ebpf.RingBuf) }},
}

// tableFeatures are what ProgramTables needs on top.
var tableFeatures = []kernelFeature{
	{"bpf_get_current_task_btf", "5.11", func() error {
		return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnGetCurrentTaskBtf)
	}},
	{"bpf_task_pt_regs", "5.15", func() error { return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnTaskPtRegs) }},
	{"bpf_loop", "5.17", func() error { return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnLoop) }},
	{"bpf_find_vma", "5.17", func() error { return features.HaveProgramHelper(ebpf.PerfEvent, asm.FnFindVma) }},
}

// probe runs the probes of fs and returns the names (with the release that
// added them) of those the kernel lacks. An error means a probe could not
// tell (e.g. permission denied), not that a feature is missing.
func probe(fs []kernelFeature) (missing []string, err error) {
	for _, f := range fs {
		switch perr := f.probe(); {
		case errors.Is(perr, ebpf.ErrNotSupported):
			missing = append(missing, fmt.Sprintf("%s (Linux %s)", f.name, f.since))
		case perr != nil:
			return nil, explainLoadError("probe the kernel for "+f.name, perr)
		}
	}
	return missing, nil
}

// chooseProgram probes the kernel and returns the best program it runs:
// ProgramTables unless framePointersOnly is set or the kernel lacks what the
// table walk needs (noTables then names it). A kernel that runs neither
// gets a *RequirementError naming each missing feature.
func chooseProgram(framePointersOnly bool) (p Program, noTables []string, err error) {
	missing, err := probe(requiredFeatures)
	if err != nil {
		return "", nil, err
	}
	if len(missing) > 0 {
		for i, m := range missing {
			missing[i] = "the kernel lacks " + m + ": Scorch needs Linux 5.8 or newer with these features"
		}
		return "", nil, &RequirementError{Missing: missing}
	}
	if framePointersOnly {
		return ProgramFramePointers, nil, nil
	}
	if noTables, err = probe(tableFeatures); err != nil {
		return "", nil, err
	}
	if len(noTables) > 0 {
		return ProgramFramePointers, noTables, nil
	}
	return ProgramTables, nil, nil
}

// spec returns the program's collection spec.
func (p Program) spec() (*ebpf.CollectionSpec, error) {
	if p == ProgramFramePointers {
		return bpf.LoadScorchFp()
	}
	return bpf.LoadScorch()
}

// noTablesMessage is what the log says, once, when the kernel cannot run the
// table walk.
func noTablesMessage(missing []string) string {
	return "this kernel lacks " + strings.Join(missing, ", ") +
		": user stacks are walked through frame pointers only and stop at the first function built without them (Linux 5.17 or newer walks them with unwind tables)"
}
