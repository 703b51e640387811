// Package dwarfsym resolves addresses of one ELF file to source lines with
// DWARF: function names with inlined frames, file and line.
package dwarfsym

// API CONTRACT (used by package symbolizer). Keep these signatures.
//
//	// Open reads the DWARF of f (following separate debug files found by
//	// build id under debugDirs and by .gnu_debuglink, and .gnu_debugdata)
//	// and returns a resolver, or an error wrapping ErrNoDWARF when there is
//	// none. rootDir is the prefix under which the process's files are seen
//	// (e.g. /proc/PID/root), "" for the host.
//	func Open(f *elf.File, path, rootDir string, debugDirs []string) (*Table, error)
//
//	// Resolve returns the lines at the ELF virtual address pc, innermost
//	// (most inlined) first; nil when pc is in no known function.
//	func (t *Table) Resolve(pc uint64) []Line
//
//	// Size estimates the bytes the table holds, for the cache bound.
//	func (t *Table) Size() int64
//
//	type Line struct {
//		Function  string // raw linkage name (mangled) when DWARF has one, else the DWARF name
//		File      string
//		Line      int64
//		StartLine int64
//	}
