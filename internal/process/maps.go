package process

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// Perm is the set of permission bits of a mapping.
type Perm uint8

const (
	Read Perm = 1 << iota
	Write
	Exec
	Shared // 's' rather than 'p' (private)
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End)
	Perm       Perm
	Offset     uint64 // file offset of Start
	Dev        uint64 // major<<32 | minor, 0 for anonymous memory
	Inode      uint64
	Path       string // without the " (deleted)" suffix; "" for anonymous memory
	Deleted    bool   // the file was unlinked
}

// Exec reports whether the mapping holds executable memory.
func (m *Mapping) Exec() bool { return m.Perm&Exec != 0 }

// Pseudo reports whether the mapping is a kernel-named region such as
// "[vdso]", "[stack]" or "[anon:name]" rather than a file.
func (m *Mapping) Pseudo() bool { return strings.HasPrefix(m.Path, "[") }

// Anonymous reports whether the mapping has no backing file: no path, or a
// pseudo path other than a memfd.
func (m *Mapping) Anonymous() bool {
	return m.Inode == 0 || m.Path == "" || m.Pseudo()
}

// Memfd reports whether the mapping is backed by a memfd_create file
// ("/memfd:name (deleted)").
func (m *Mapping) Memfd() bool { return strings.HasPrefix(m.Path, "/memfd:") }

// maxLine bounds one line of the maps file: paths are at most PATH_MAX.
const maxLine = 64 << 10

// MapsError is a malformed line of a maps file.
type MapsError struct {
	Line int    // 1-based; 0 when the line was parsed alone (ParseLine)
	Msg  string // what is wrong, quoting the field
}

func (e *MapsError) Error() string {
	if e.Line == 0 {
		return "process: maps: " + e.Msg
	}
	return fmt.Sprintf("process: maps line %d: %s", e.Line, e.Msg)
}

// ReadMaps reads and parses procDir/maps, procDir being a process's /proc
// directory ("/proc/1234", "/proc/self"). Errors opening or reading the
// file are returned as they are (os.ErrNotExist once the process is gone);
// a malformed line is a *MapsError, after the mappings before it.
func ReadMaps(procDir string) ([]Mapping, error) {
	var ms []Mapping
	var perr error
	err := withProcFile(filepath.Join(procDir, "maps"), 0, func(b []byte) error {
		ms, perr = ParseMaps(bytes.NewReader(b))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ms, perr
}

// ParseMaps reads a whole maps file. It stops at the first malformed line
// (or at a read error of r) and returns the mappings before it together
// with a *MapsError naming the line. Callers wanting only code keep the mappings whose Exec is true.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	var out []Mapping
	n := 1
	for ; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		m, err := ParseLine(string(line))
		if err != nil {
			err.(*MapsError).Line = n
			return out, err
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil { // a line longer than any path
		return out, &MapsError{Line: n, Msg: err.Error()}
	}
	return out, nil
}

// ParseLine parses one line of a maps file (without the newline). A
// malformed line is a *MapsError.
func ParseLine(line string) (Mapping, error) {
	m, err := parseLine(line)
	if err != nil {
		return Mapping{}, &MapsError{Msg: err.Error()}
	}
	return m, nil
}

func parseLine(line string) (Mapping, error) {
	var m Mapping
	rest := line
	field := func(what string) (string, error) {
		rest = strings.TrimLeft(rest, " ")
		i := strings.IndexByte(rest, ' ')
		if i < 0 {
			if rest == "" {
				return "", fmt.Errorf("missing %s in %q", what, line)
			}
			f := rest
			rest = ""
			return f, nil
		}
		f := rest[:i]
		rest = rest[i+1:]
		return f, nil
	}

	rng, err := field("address range")
	if err != nil {
		return m, err
	}
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return m, fmt.Errorf("address range %q has no '-'", rng)
	}
	if m.Start, err = parseHex(lo, "start address"); err != nil {
		return m, err
	}
	if m.End, err = parseHex(hi, "end address"); err != nil {
		return m, err
	}
	if m.End < m.Start {
		return m, fmt.Errorf("address range %q ends before it starts", rng)
	}

	perms, err := field("permissions")
	if err != nil {
		return m, err
	}
	if len(perms) != 4 {
		return m, fmt.Errorf("permissions %q are not 4 characters", perms)
	}
	for i, want := range [4]byte{'r', 'w', 'x', 's'} {
		switch c := perms[i]; {
		case c == want:
			m.Perm |= Perm(1) << i
		case c == '-' || (i == 3 && c == 'p'):
		default:
			return m, fmt.Errorf("permissions %q: unexpected %q", perms, c)
		}
	}

	off, err := field("offset")
	if err != nil {
		return m, err
	}
	if m.Offset, err = parseHex(off, "offset"); err != nil {
		return m, err
	}

	dev, err := field("device")
	if err != nil {
		return m, err
	}
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return m, fmt.Errorf("device %q has no ':'", dev)
	}
	majN, err := parseHex(maj, "device major")
	if err != nil {
		return m, err
	}
	minN, err := parseHex(min, "device minor")
	if err != nil {
		return m, err
	}
	if majN > 0xffffffff || minN > 0xffffffff {
		return m, fmt.Errorf("device %q out of range", dev)
	}
	m.Dev = majN<<32 | minN

	ino, err := field("inode")
	if err != nil {
		return m, err
	}
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("inode %q: %w", ino, err)
	}

	// The path is the rest of the line after the column padding; it may
	// contain spaces.
	path := strings.TrimLeft(rest, " ")
	if p, ok := strings.CutSuffix(path, " (deleted)"); ok {
		path = p
		m.Deleted = true
	}
	m.Path = path
	return m, nil
}

func parseHex(s, what string) (uint64, error) {
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("%s %q is not a 64-bit hex number", what, s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a 64-bit hex number", what, s)
	}
	return v, nil
}
