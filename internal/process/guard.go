package process

import (
	"fmt"
	"runtime/debug"
)

// ParseError is a panic raised while parsing a file (by debug/elf,
// debug/dwarf or our own parsers on a crafted or truncated file), caught by
// Guard.
type ParseError struct {
	Path  string // the file, as the caller named it
	Panic any    // the value the parser panicked with
	Stack string // where it panicked, for the report that fixes the parser
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("process: panic while parsing %s: %v", e.Path, e.Panic)
}

// Guard runs parse, which reads the untrusted file path, and returns its
// error; a panic in parse is returned as a *ParseError, so that the caller
// counts the file and skips it rather than crashing. A fault while reading
// memory-mapped bytes of the file (a file truncated under its mapping
// raises SIGBUS) panics under Guard too, and is returned the same way.
func Guard(path string, parse func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &ParseError{Path: path, Panic: r, Stack: string(debug.Stack())}
		}
	}()
	return parse()
}
