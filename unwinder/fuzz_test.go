package unwinder

import (
	"bytes"
	"debug/elf"
	"os"
	"runtime"
	"strings"
	"testing"
)

// FuzzBuild builds tables from mutated ELF files, as the table worker does
// from the files of every process on the host (a container's included).
// The worker runs Build under process.Guard, which turns a panic into a
// counted, skipped file; this target fails on a panic raised in Scorch's
// own code (the unwinder, the CFI and pclntab parsers, the mapped
// sections), which Guard would hide, and ignores those of debug/elf, which
// are the standard library's and which Guard contains.
func FuzzBuild(f *testing.F) {
	// A small C program: the fuzzer mutates a seed of megabytes (any Go
	// binary) at a few executions a minute. The pclntab parser has fuzz
	// targets of its own (internal/gopclntab).
	if data, err := os.ReadFile(workload(f, "nofp-c")); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer func() {
			if r := recover(); r != nil {
				if fn := panicSite(); strings.HasPrefix(fn, "github.com/scorch-profiler/scorch/") {
					t.Fatalf("panic in %s: %v", fn, r)
				}
			}
		}()
		r := bytes.NewReader(data)
		ef, err := elf.NewFile(r)
		if err != nil {
			return
		}
		tab, err := Build(ef, r)
		if err != nil {
			return
		}
		if _, err := tab.AppendBinary(nil); err != nil {
			t.Fatalf("a table Build returned does not encode: %v", err)
		}
	})
}

// panicSite returns the function that raised the panic being recovered
// (called from the deferred function): the first frame outside the runtime
// below runtime.gopanic.
func panicSite() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	inPanic := false
	for {
		fr, more := frames.Next()
		switch {
		case fr.Function == "runtime.gopanic":
			inPanic = true
		case inPanic && !strings.HasPrefix(fr.Function, "runtime."):
			return fr.Function
		}
		if !more {
			return ""
		}
	}
}
