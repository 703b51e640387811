package process

import (
	"fmt"
	"os"
	"sync"
)

// maxVDSO bounds the vDSO image read (it is two pages or so).
const maxVDSO = 1 << 20

// VDSO returns the image of the running kernel's vDSO, read once from our
// own address space (/proc/self/maps and /proc/self/mem, whatever /proc
// the caller reads processes from): every process of a kernel maps the
// same image, except 32-bit ones, whose [vdso] mapping has another size
// than len(image). The bytes are shared: callers must not modify them.
func VDSO() ([]byte, error) { return vdso() }

var vdso = sync.OnceValues(func() ([]byte, error) { return readVDSO("/proc/self") })

func readVDSO(procDir string) ([]byte, error) {
	ms, err := ReadMaps(procDir) // on a malformed line, the lines before it
	for _, m := range ms {
		if m.Path != "[vdso]" {
			continue
		}
		if m.End-m.Start > maxVDSO {
			return nil, fmt.Errorf("process: vdso of %d bytes, more than %d", m.End-m.Start, maxVDSO)
		}
		mem, err := os.Open(procDir + "/mem")
		if err != nil {
			return nil, fmt.Errorf("process: vdso: %w", err)
		}
		defer mem.Close()
		img := make([]byte, m.End-m.Start)
		if _, err := mem.ReadAt(img, int64(m.Start)); err != nil {
			return nil, fmt.Errorf("process: reading the vdso at %#x: %w", m.Start, err)
		}
		return img, nil
	}
	if err != nil {
		return nil, fmt.Errorf("process: vdso: %w", err)
	}
	return nil, fmt.Errorf("process: no [vdso] in %s/maps", procDir)
}
