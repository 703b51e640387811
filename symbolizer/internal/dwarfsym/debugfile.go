package dwarfsym

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/scorch-profiler/scorch/internal/process"
)

// debugFile is an opened separate debug file.
type debugFile struct {
	*elf.File
	osf *os.File
}

func (d *debugFile) Close() error {
	d.File.Close()
	return d.osf.Close()
}

// findDebugFile looks for a separate debug file of f with DWARF: by build
// id under debugDirs, then by .gnu_debuglink. It returns nil and the
// reason (or nil) when there is none.
func findDebugFile(f *elf.File, path, rootDir string, debugDirs []string) (*debugFile, string, error) {
	var reasons []error
	if id := process.BuildID(f); len(id) >= 4 {
		for _, dir := range debugDirs {
			p := filepath.Join(dir, ".build-id", id[:2], id[2:]+".debug")
			for _, c := range rooted(rootDir, p) {
				df, err := openDebugCandidate(c, f, func(df *elf.File, _ *os.File) error {
					if got := process.BuildID(df); got != id {
						return fmt.Errorf("build id %q, want %s", got, id)
					}
					return nil
				})
				if df != nil {
					return df, c, nil
				}
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					reasons = append(reasons, err)
				}
			}
		}
	}
	name, crc, ok := debugLink(f)
	if ok {
		dir := filepath.Dir(path)
		cands := []string{filepath.Join(dir, name), filepath.Join(dir, ".debug", name)}
		for _, d := range debugDirs {
			cands = append(cands, filepath.Join(d, dir, name))
		}
		for _, p := range cands {
			if !filepath.IsAbs(p) {
				continue
			}
			for _, c := range rooted(rootDir, p) {
				df, err := openDebugCandidate(c, f, func(_ *elf.File, osf *os.File) error {
					h := crc32.NewIEEE()
					if _, err := io.Copy(h, io.LimitReader(osf, maxDebugLinkFS)); err != nil {
						return err
					}
					if got := h.Sum32(); got != crc {
						return fmt.Errorf("CRC %08x, .gnu_debuglink wants %08x", got, crc)
					}
					return nil
				})
				if df != nil {
					return df, c, nil
				}
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					reasons = append(reasons, err)
				}
			}
		}
	}
	return nil, "", errors.Join(reasons...)
}

// rooted returns p under rootDir first, then p on the host.
func rooted(rootDir, p string) []string {
	if rootDir == "" || rootDir == "/" {
		return []string{p}
	}
	return []string{filepath.Join(rootDir, p), p}
}

// openDebugCandidate opens the ELF file at p, checks it matches f and
// passes check, and has DWARF.
func openDebugCandidate(p string, f *elf.File, check func(*elf.File, *os.File) error) (*debugFile, error) {
	osf, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if st, err := osf.Stat(); err != nil || !st.Mode().IsRegular() {
		osf.Close()
		return nil, fmt.Errorf("debug file %s: not a regular file", p)
	}
	df, err := elf.NewFile(osf)
	if err != nil {
		osf.Close()
		return nil, fmt.Errorf("debug file %s: %w", p, err)
	}
	d := &debugFile{File: df, osf: osf}
	if df.Class != f.Class || df.Machine != f.Machine {
		d.Close()
		return nil, fmt.Errorf("debug file %s: %v %v does not match %v %v", p, df.Class, df.Machine, f.Class, f.Machine)
	}
	if err := check(df, osf); err != nil {
		d.Close()
		return nil, fmt.Errorf("debug file %s: %w", p, err)
	}
	if !hasDWARF(df) {
		d.Close()
		return nil, fmt.Errorf("debug file %s: no .debug_info", p)
	}
	return d, nil
}

// debugLink parses .gnu_debuglink: a NUL-terminated file name padded to 4
// bytes, then the CRC-32 of the debug file.
func debugLink(f *elf.File) (name string, crc uint32, ok bool) {
	s := f.Section(".gnu_debuglink")
	if s == nil || s.Type == elf.SHT_NOBITS || s.Size > 4096 {
		return "", 0, false
	}
	data, err := s.Data()
	if err != nil {
		return "", 0, false
	}
	i := bytes.IndexByte(data, 0)
	if i <= 0 {
		return "", 0, false
	}
	off := (i + 4) &^ 3
	if off+4 > len(data) {
		return "", 0, false
	}
	name = string(data[:i])
	if strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return "", 0, false // a file name, never a path
	}
	return name, f.ByteOrder.Uint32(data[off:]), true
}
