package symbolizer

import (
	"strings"
	"sync"

	"github.com/ianlancetaylor/demangle"
)

// demangler turns linkage names into display names per Options.Demangle,
// remembering recent results (demangling is far slower than a lookup).
type demangler struct {
	mode DemangleMode
	opts []demangle.Option

	mu    sync.Mutex
	cache map[string]string
}

// maxDemangleCache bounds the remembered names; the map is reset when full.
const maxDemangleCache = 1 << 16

func newDemangler(mode DemangleMode) *demangler {
	d := &demangler{mode: mode, cache: make(map[string]string)}
	if mode == DemangleSimplified {
		d.opts = []demangle.Option{demangle.NoParams, demangle.NoTemplateParams, demangle.NoClones}
	}
	return d
}

// mangled reports whether name looks like an Itanium C++ or Rust symbol.
func mangled(name string) bool {
	return strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "__Z") || strings.HasPrefix(name, "_R")
}

// name returns the display name of a linkage name.
func (d *demangler) name(raw string) string {
	if d.mode == DemangleNone || !mangled(raw) {
		return raw
	}
	d.mu.Lock()
	v, ok := d.cache[raw]
	d.mu.Unlock()
	if ok {
		return v
	}
	v = demangle.Filter(raw, d.opts...)
	d.mu.Lock()
	if len(d.cache) >= maxDemangleCache {
		clear(d.cache)
	}
	d.cache[raw] = v
	d.mu.Unlock()
	return v
}

// line builds a Line from a linkage name.
func (d *demangler) line(raw, file string, line, start int64) Line {
	l := Line{Function: d.name(raw), File: file, Line: line, StartLine: start}
	if l.Function != raw {
		l.SystemName = raw
	}
	return l
}
