package sampler

import (
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/unwinder"
)

// DefaultTableCacheBytes bounds the unwind tables kept on disk.
const DefaultTableCacheBytes = 64 << 20

// tableCacheMagic starts every cached table file; the last byte is the
// format version.
const tableCacheMagic = "SCORCHT\x01"

// tableCacheHeader is the magic, the ELF-address adjustment (int64), the
// row count (uint32) and the CRC-32 of the rows (uint32), little endian.
const tableCacheHeader = len(tableCacheMagic) + 16

// tableCache keeps built tables on disk, by the file's build id, so that a
// restarted agent, or a host running the same binaries again, builds each
// table once. The table worker and its builders use it at once: it keeps no
// state but the directory (a write is a rename). A file that
// does not read back whole and unchanged (truncated, corrupt, written by
// another build of Scorch) is removed and the table built again.
type tableCache struct {
	dir      string
	maxBytes int64
	version  string // of this build of Scorch: tables from another are not trusted
	log      *slog.Logger
}

func newTableCache(dir string, maxBytes int64, log *slog.Logger) (*tableCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("unwind table cache: %w", err)
	}
	if maxBytes <= 0 {
		maxBytes = DefaultTableCacheBytes
	}
	return &tableCache{dir: dir, maxBytes: maxBytes, version: buildVersion(), log: log}, nil
}

// buildVersion identifies this build of Scorch, so that a table cached by
// another build, whose unwinder may differ, is not read: the Go build id
// of the running executable (a hash of what it was built from), with the
// module version and VCS revision. The VCS stamp alone is not enough: a
// build without it (-buildvcs=false, or no repository) says "(devel)"
// whatever its code, and read tables an older unwinder had built.
func buildVersion() string {
	v := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.modified" {
				v += "," + s.Value
			}
		}
	}
	if f, err := elf.Open("/proc/self/exe"); err == nil {
		v += "," + process.GoBuildID(f)
		f.Close()
	}
	return v
}

// cacheable says whether content key ck names contents wherever they are
// (a build id), not a file on this host.
func cacheable(ck string) bool {
	return strings.HasPrefix(ck, "build-id:") || strings.HasPrefix(ck, "go-build-id:")
}

func (c *tableCache) path(ck string) string {
	h := sha256.Sum256([]byte(c.version + "\x00" + ck))
	return filepath.Join(c.dir, hex.EncodeToString(h[:16])+".tab")
}

// get returns the cached rows and adjustment of ck.
func (c *tableCache) get(ck string) (rows []byte, adj int64, ok bool) {
	if c == nil || !cacheable(ck) {
		return nil, 0, false
	}
	p := c.path(ck)
	rows, adj, err := readCachedTable(p)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Debug("unwind table cache: dropping unreadable entry", "path", p, "err", err)
			os.Remove(p)
		}
		return nil, 0, false
	}
	now := time.Now()
	os.Chtimes(p, now, now) // least recently used goes first
	return rows, adj, true
}

// readCachedTable reads and checks one cached table.
func readCachedTable(p string) ([]byte, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var hdr [tableCacheHeader]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, 0, fmt.Errorf("header: %w", err)
	}
	if string(hdr[:len(tableCacheMagic)]) != tableCacheMagic {
		return nil, 0, errors.New("not a cached table of this format")
	}
	h := hdr[len(tableCacheMagic):]
	adj := int64(binary.LittleEndian.Uint64(h[0:]))
	n := binary.LittleEndian.Uint32(h[8:])
	sum := binary.LittleEndian.Uint32(h[12:])
	if n == 0 || n > maxFileRows {
		return nil, 0, fmt.Errorf("%d rows, want 1 to %d", n, maxFileRows)
	}
	rows := make([]byte, int(n)*unwinder.RowSize)
	if _, err := io.ReadFull(f, rows); err != nil {
		return nil, 0, fmt.Errorf("rows: %w", err)
	}
	if extra, _ := f.Read(make([]byte, 1)); extra != 0 {
		return nil, 0, errors.New("trailing bytes after the rows")
	}
	if crc32.ChecksumIEEE(rows) != sum {
		return nil, 0, errors.New("rows do not match their checksum")
	}
	return rows, adj, nil
}

// put stores the rows of ck, then keeps the cache within its bound.
func (c *tableCache) put(ck string, rows []byte, adj int64) {
	if c == nil || !cacheable(ck) || len(rows) == 0 || len(rows)%unwinder.RowSize != 0 {
		return
	}
	buf := make([]byte, tableCacheHeader, tableCacheHeader+len(rows))
	copy(buf, tableCacheMagic)
	h := buf[len(tableCacheMagic):]
	binary.LittleEndian.PutUint64(h[0:], uint64(adj))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(rows)/unwinder.RowSize))
	binary.LittleEndian.PutUint32(h[12:], crc32.ChecksumIEEE(rows))
	buf = append(buf, rows...)
	p := c.path(ck)
	tmp, err := os.CreateTemp(c.dir, ".tab-*")
	if err != nil {
		c.log.Debug("unwind table cache: write", "err", err)
		return
	}
	_, werr := tmp.Write(buf)
	cerr := tmp.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp.Name()) // a full disk: the table is still loaded, only not cached
		c.log.Debug("unwind table cache: write", "err", errors.Join(werr, cerr))
		return
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		os.Remove(tmp.Name())
		c.log.Debug("unwind table cache: write", "err", err)
		return
	}
	c.trim(p)
}

// trim removes the least recently used tables (but keep, just written)
// until the cache fits its bound, and temporary files left by a crash.
func (c *tableCache) trim(keep string) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type file struct {
		path string
		size int64
		used time.Time
	}
	var (
		files []file
		total int64
	)
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		p := filepath.Join(c.dir, e.Name())
		if strings.HasPrefix(e.Name(), ".tab-") && time.Since(info.ModTime()) > time.Minute {
			os.Remove(p)
			continue
		}
		if !strings.HasSuffix(e.Name(), ".tab") {
			continue
		}
		files = append(files, file{p, info.Size(), info.ModTime()})
		total += info.Size()
	}
	if total <= c.maxBytes {
		return
	}
	slices.SortFunc(files, func(a, b file) int { return a.used.Compare(b.used) })
	for _, f := range files {
		if total <= c.maxBytes {
			break
		}
		if f.path != keep && os.Remove(f.path) == nil {
			total -= f.size
		}
	}
}
