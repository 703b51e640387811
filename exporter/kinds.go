package exporter

import (
	"path"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/symbolizer"
)

// Mapping file names the Builder gives frames that are not in a file of
// their own. They are the names perf gives the same code, and every name
// in brackets is one that go tool pprof knows not to look for on disk.
//
//   - kernel: "[kernel.kallsyms]" for the kernel image, "[NAME]" for the
//     module NAME (both from the symbolizer);
//   - vDSO: "[vdso]" (and "[vsyscall]"), user-space code the kernel maps;
//   - JIT: "[jit]" for anonymous executable memory, which is code a
//     runtime generated: named by the process's perf map
//     (/tmp/perf-PID.map) when it has one, else "[anon]+0xOFFSET";
//   - ordinary user code: the file's path as the process sees it.
//
// An address in no mapping at all gets no Mapping and the function
// "[unknown]".
const (
	MappingKernel = "[kernel.kallsyms]"
	MappingVDSO   = "[vdso]"
	MappingJIT    = "[jit]"
)

// Address ranges of the synthetic mappings for frames whose region the
// symbolizer has no mapping for: the kernel and user halves of a 64-bit
// address space (x86-64 and arm64 with 48-bit addresses).
const (
	kernelHalf = 0xffff_8000_0000_0000
	userLimit  = 0x0000_8000_0000_0000
)

// FrameKind says where the code of loc lives. It is the one rule for every
// profile Scorch reads or writes: the viewer colours frames by it and the
// tests check the Builder's output with it. It reads the Builder's mapping
// names (see MappingJIT) and the ones perf and its converters write, so
// that a profile from another tool is classified the same way:
//
//   - JIT: "[jit]", perf's "//anon" and "[JIT] tid N", and perf map files
//     (perf-PID.map);
//   - user: "[vdso]", "[vsyscall]", "[heap]", "[stack]", "[uprobes]" and
//     "[anon:NAME]";
//   - kernel: any other name in brackets ("[kernel.kallsyms]", modules);
//   - user: any other name, a file.
//
// A location without a mapping is kernel when its address lies in the
// kernel half of the address space or it is the FrameKernelStackLost
// marker, user otherwise.
func FrameKind(loc *profile.Location) symbolizer.Kind {
	if loc == nil {
		return symbolizer.KindUser
	}
	m := loc.Mapping
	if m == nil {
		if loc.Address >= kernelHalf {
			return symbolizer.KindKernel
		}
		if loc.Address == 0 && len(loc.Line) == 1 && loc.Line[0].Function != nil && loc.Line[0].Function.Name == FrameKernelStackLost {
			return symbolizer.KindKernel
		}
		return symbolizer.KindUser
	}
	f := m.File
	switch {
	case f == MappingJIT || f == "//anon" || strings.HasPrefix(f, "[JIT]") || isPerfMap(f):
		return symbolizer.KindJIT
	case f == MappingVDSO || f == "[vsyscall]" || f == "[heap]" || f == "[stack]" || f == "[uprobes]" || strings.HasPrefix(f, "[anon:"):
		return symbolizer.KindUser
	case strings.HasPrefix(f, "["):
		return symbolizer.KindKernel
	}
	return symbolizer.KindUser
}

// isPerfMap tells whether f names a perf map file: perf-DIGITS.map.
func isPerfMap(f string) bool {
	pid, ok := strings.CutPrefix(path.Base(f), "perf-")
	if !ok {
		return false
	}
	pid, ok = strings.CutSuffix(pid, ".map")
	if !ok || pid == "" {
		return false
	}
	for _, c := range pid {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
