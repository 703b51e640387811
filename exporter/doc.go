// Package exporter turns drained samples into profiles and writes them out.
//
// A Builder accumulates samples (from internal/sampler), names their
// addresses through a Resolver (package symbolizer) and produces one pprof
// profile (github.com/google/pprof/profile): sample types samples/count and
// cpu/nanoseconds, one Mapping per mapped file with its build id, Locations
// with addresses, Functions with names and files, the labels comm and pid.
// Kernel frames sit above the user frames of the same sample, as in perf.
// A frame's kind (kernel, JIT, user) is carried by its mapping's file name,
// in perf's convention ("[kernel.kallsyms]", "[vdso]", "[jit]", a path; see
// MappingJIT), and FrameKind reads it back: the viewer and the tests use
// FrameKind and nothing else.
//
// Writers for files (pprof, folded stacks) live here too; the upload to
// Pyroscope is in exporter/pyroscope.
package exporter
