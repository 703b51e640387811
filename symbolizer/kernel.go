package symbolizer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	proc "github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/symbolizer/internal/kallsyms"
)

// kernel resolves kernel addresses with /proc/kallsyms, reloaded when the
// set of loaded modules changes.
type kernel struct {
	s *Symbolizer

	mu        sync.Mutex
	tab       *kallsyms.Table
	mappings  []*Mapping // one per tab.Modules()
	modules   []byte     // /proc/modules at the last load
	lastCheck time.Time
	loadErr   error
}

// moduleCheckInterval throttles comparing /proc/modules with its content at
// the last kallsyms load.
const moduleCheckInterval = 5 * time.Second

// sysRoot is where /sys/kernel/notes and /sys/module live.
var sysRoot = "/sys"

func newKernel(s *Symbolizer) *kernel { return &kernel{s: s} }

// table returns the current kallsyms table, reloading it when modules
// changed.
func (k *kernel) table() (*kallsyms.Table, []*Mapping) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tab != nil && time.Since(k.lastCheck) < moduleCheckInterval {
		return k.tab, k.mappings
	}
	if k.tab == nil && k.loadErr != nil && time.Since(k.lastCheck) < moduleCheckInterval {
		return nil, nil
	}
	k.lastCheck = time.Now()
	mods, _ := os.ReadFile(filepath.Join(k.s.opts.ProcRoot, "modules")) // absent without module support
	if k.tab != nil && bytes.Equal(mods, k.modules) {
		return k.tab, k.mappings
	}
	var ranges map[string][2]uint64
	if len(mods) > 0 {
		ranges, _ = kallsyms.ParseModules(bytes.NewReader(mods))
	}
	f, err := os.Open(filepath.Join(k.s.opts.ProcRoot, "kallsyms"))
	if err == nil {
		var tab *kallsyms.Table
		tab, err = kallsyms.Parse(f, ranges)
		f.Close()
		if err == nil {
			k.tab, k.modules = tab, mods
			k.mappings = k.mappings[:0:0]
			for _, m := range tab.Modules() {
				mp := &Mapping{Start: m.Start, Limit: m.End, File: "[kernel.kallsyms]"}
				if m.Name != "" {
					mp.File = "[" + m.Name + "]"
					mp.BuildID = buildIDFromNotes(filepath.Join(sysRoot, "module", m.Name, "notes", ".note.gnu.build-id"))
				} else {
					mp.BuildID = buildIDFromNotes(filepath.Join(sysRoot, "kernel", "notes"))
				}
				k.mappings = append(k.mappings, mp)
			}
			k.s.stats.kallsymsReloads.Add(1)
			k.loadErr = nil
			return k.tab, k.mappings
		}
		k.s.stats.parseErrors.Add(1)
	}
	if k.loadErr == nil {
		k.s.log.Warn("symbolizer: cannot read kernel symbols", "err", err)
	}
	k.loadErr = err
	return k.tab, k.mappings
}

// ResolveKernel names a kernel address with /proc/kallsyms. Module
// addresses get a Mapping named like "[ext4]", the kernel image
// "[kernel.kallsyms]".
func (s *Symbolizer) ResolveKernel(addr uint64) Frame {
	s.stats.kernelLookups.Add(1)
	tab, mappings := s.kern.table()
	fr := Frame{Kind: KindKernel}
	if tab == nil {
		s.stats.missKernel.Add(1)
		fr.Lines = []Line{{Function: "[kernel]"}}
		return fr
	}
	sym, mod, ok := tab.Lookup(addr)
	if mod >= 0 {
		fr.Mapping = mappings[mod]
	}
	if !ok {
		s.stats.missKernel.Add(1)
		if fr.Mapping != nil {
			fr.Lines = []Line{{Function: fmt.Sprintf("%s+%#x", fr.Mapping.File, addr-fr.Mapping.Start)}}
		} else {
			fr.Lines = []Line{{Function: "[kernel]"}}
		}
		return fr
	}
	fr.Lines = []Line{{Function: sym.Name}}
	return fr
}

// buildIDFromNotes reads the GNU build id from a file of raw ELF notes
// (/sys/kernel/notes, /sys/module/M/notes/.note.gnu.build-id).
func buildIDFromNotes(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return ""
	}
	return proc.NotesBuildID(data, binary.NativeEndian)
}

// vdsoObject returns the vDSO image of the running kernel (every process's
// [vdso] is the same image), opened once.
func (s *Symbolizer) vdsoObject() *object {
	s.vdsoOnce.Do(func() {
		pf, err := s.pfiles.VDSO()
		if err != nil {
			s.log.Warn("symbolizer: cannot read the vDSO", "err", err)
			return
		}
		s.vdso = &object{key: pf.ContentKey, pf: pf, path: pf.Path}
	})
	return s.vdso
}
