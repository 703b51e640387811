// Package symbolizer turns the raw instruction addresses that the kernel
// hands us (user-space return addresses of a process, kernel addresses) into
// named frames: function, file and line, with inlined frames expanded.
//
// User addresses are resolved through the process's memory map
// (/proc/PID/maps): an address falls inside one mapping of a file, the file
// offset is addr - start + offset, and the ELF program headers turn that
// offset into the virtual address the file's symbol tables speak of.
// Files are opened through /proc/PID/root (or /proc/PID/map_files) so that
// processes in other mount namespaces and deleted binaries resolve.
//
// Each file is named by the best source it has: for Go binaries the
// .gopclntab (names, lines and inlined frames, even when stripped); else
// DWARF (internal/dwarfsym, with separate debug files); else .symtab or
// .dynsym. Kernel addresses resolve through /proc/kallsyms, the vDSO through
// the image of our own, and anonymous executable memory (JIT code) through
// the process's /tmp/perf-PID.map.
//
// Symbol tables are cached by build id and shared between processes; the
// cache is bounded in bytes. A process keeps its files open from Observe
// on, so that it still resolves after it exits, until Forget.
package symbolizer

import (
	"log/slog"
	"strconv"
)

// API CONTRACT (shared with internal/sampler, exporter and cmd/scorch).
// Keep these signatures; add fields and methods freely.

// Kind tells where a frame's code lives.
type Kind uint8

const (
	KindUser   Kind = iota // native user-space code in a file mapping
	KindKernel             // kernel or kernel module
	KindJIT                // anonymous executable memory: code a runtime generated, named by its perf map if any
)

var kindNames = [...]string{KindUser: "user", KindKernel: "kernel", KindJIT: "jit"}

// String returns "user", "kernel" or "jit" (the viewer's colour classes).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Mapping is one file mapped into a process (or the kernel image / a module).
type Mapping struct {
	Start, Limit uint64 // runtime address range [Start, Limit)
	Offset       uint64 // file offset of Start
	File         string // path as the process sees it (e.g. /usr/lib/x86_64-linux-gnu/libc.so.6, [vdso], [kernel.kallsyms])
	BuildID      string // hex GNU build id, "" when the file has none
}

// Line is one level of a (possibly inlined) call at an address.
type Line struct {
	Function   string // display name (demangled per Options)
	SystemName string // raw (mangled) symbol name, "" if same as Function
	File       string // source file, "" when unknown
	Line       int64  // source line, 0 when unknown
	StartLine  int64  // first line of the function, 0 when unknown
}

// Frame is a resolved address.
type Frame struct {
	Kind    Kind
	Mapping *Mapping // nil when the address is in no known mapping
	// Lines, innermost (most inlined) first, as pprof expects. Never empty:
	// an address that cannot be named gets one Line whose Function says where
	// it is ("libfoo.so+0x1234", "[unknown]").
	Lines []Line
}

// DemangleMode selects how C++ and Rust symbol names are displayed.
type DemangleMode uint8

const (
	DemangleFull       DemangleMode = iota // full signatures: scorch::Box<long>::spin(int)
	DemangleSimplified                     // no parameters, template arguments or clone suffixes: scorch::Box::spin
	DemangleNone                           // raw linkage names
)

// Options configures a Symbolizer. The zero value is usable.
type Options struct {
	ProcRoot   string       // "/proc" by default
	CacheBytes int64        // bound of the symbol-table LRU, default 256 MiB
	Demangle   DemangleMode // DemangleFull by default
	DebugDirs  []string     // default ["/usr/lib/debug"]
	Logger     *slog.Logger // default slog.Default()
	// SpillDir is where compressed debug sections (those of Debian's and
	// Fedora's debug packages) are decompressed to, in files that are
	// mapped and removed when the file's tables are dropped: their bytes
	// are then page cache, not heap. "" keeps them on the heap.
	SpillDir string
}

// Stats are cumulative counters of a Symbolizer.
type Stats struct {
	UserLookups   uint64
	KernelLookups uint64

	// Misses by reason: an address in no mapping, in a file we could not
	// open or parse, in a file that has no symbol for it, in anonymous
	// memory no perf map names, and kernel addresses kallsyms lacks.
	MissNoMapping uint64
	MissNoFile    uint64
	MissNoSymbol  uint64
	MissJIT       uint64
	MissKernel    uint64

	Processes      int    // processes currently observed
	Files          int    // open files (shared by build id)
	CacheBytes     int64  // bytes of loaded symbol tables
	CacheEntries   int    // files whose tables are loaded
	CacheEvictions uint64 // tables dropped to stay under Options.CacheBytes

	ParseErrors     uint64 // malformed maps, kallsyms, perf maps, ELF files
	RecoveredPanics uint64 // panics while parsing a file, recovered
	KallsymsReloads uint64
	PerfMapReloads  uint64
	// MapsReads counts reads of processes' maps files, by the symbolizer
	// and the unwind-table worker that shares its Files; MapsShared the
	// times one of them used the other's recent read instead.
	MapsReads  uint64
	MapsShared uint64
	// KernelMappings counts mappings learned from the kernel's unwinder
	// (see Symbolizer.UseKernelMappings) because /proc/PID/maps, when it
	// was read, did not have them.
	KernelMappings uint64
}
