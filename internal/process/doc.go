// Package process is the one place where Scorch reads what a Linux process
// maps and the files behind it: the memory map (/proc/PID/maps), the
// mapped files (through /proc/PID/map_files, else the process's root), GNU
// build ids, the running kernel's vDSO image, and the conversion of a
// run-time address to the ELF virtual address the file's tables use. Both
// the symbolizer and the sampler's unwind table worker use it, so that the
// two agree on which file a mapping holds and where its code is, and share
// one reader of the maps (Snapshots) and one cache of parsed files (Files).
//
// The files are untrusted: any process may map a crafted ELF file. The
// parsers here are bounded and never panic on bad input; the parsers of
// other packages (debug/elf, debug/dwarf, the unwinder) run under Guard,
// which turns a panic into a *ParseError so that the caller counts the file
// and skips it.
//
// # The maps file
//
// /proc/PID/maps has one mapping per line:
//
//	start-end perms offset major:minor inode   path
//	55d0c1a00000-55d0c1a22000 r-xp 00002000 fe:00 247026 /usr/bin/cat
//
// The path column is optional (anonymous memory), may name a pseudo mapping
// ("[vdso]", "[stack]", "[heap]", "[anon:name]"), may end in " (deleted)"
// when the file was unlinked after it was mapped, and may contain spaces.
package process
