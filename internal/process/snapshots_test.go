package process

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeProc writes a maps file into a new directory standing for a
// process's /proc directory.
func fakeProc(t *testing.T, maps string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "maps"), []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const twoMappings = `1000-2000 r-xp 00000000 fe:00 11 /bin/prog
2000-3000 rw-p 00001000 fe:00 11 /bin/prog
7000-8000 r-xp 00000000 fe:00 12 /lib/libc.so
`

func TestSnapshotsReuse(t *testing.T) {
	dir := fakeProc(t, twoMappings)
	c := NewSnapshots()
	past := time.Now().Add(-time.Second)

	ms, err := c.Read(dir, past, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Only the executable mappings are kept.
	if len(ms) != 2 || ms[0].Path != "/bin/prog" || ms[1].Path != "/lib/libc.so" {
		t.Fatalf("first read: %+v", ms)
	}
	ms[0].Path = "changed by the caller"

	// The program maps a new library: a caller accepting an older read
	// and not asking for its address gets the kept read.
	if err := os.WriteFile(filepath.Join(dir, "maps"), []byte(twoMappings+"9000-a000 r-xp 00000000 fe:00 13 /lib/new.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, _ = c.Read(dir, past, 0x7800)
	if len(ms) != 2 || ms[0].Path != "/bin/prog" {
		t.Fatalf("reused read: %+v (a caller's change must not reach the cache)", ms)
	}
	if s := c.Stats(); s.Reads != 1 || s.Reused != 1 || s.Processes != 1 {
		t.Fatalf("stats after a reuse: %+v", s)
	}

	// An address the kept read does not hold is read again.
	ms, _ = c.Read(dir, past, 0x9100)
	if len(ms) != 3 {
		t.Fatalf("read for a new address: %+v", ms)
	}
	// So is a read newer than the kept one.
	if _, err := c.Read(dir, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Reads != 3 || s.Reused != 1 {
		t.Fatalf("stats: %+v", s)
	}
	// A read older than SnapshotAge is never reused.
	c.mu.Lock()
	c.by[filepath.Clean(dir)].at = time.Now().Add(-SnapshotAge - time.Second)
	c.mu.Unlock()
	c.Read(dir, time.Time{}, 0)
	if s := c.Stats(); s.Reads != 4 || s.Reused != 1 {
		t.Fatalf("a read older than SnapshotAge was reused: %+v", s)
	}

	c.Forget(dir + "/")
	c.Read(dir, past, 0)
	if s := c.Stats(); s.Reads != 5 || s.Processes != 1 {
		t.Fatalf("after Forget: %+v", s)
	}
}

func TestSnapshotsGoneAndMalformed(t *testing.T) {
	c := NewSnapshots()
	dir := fakeProc(t, twoMappings)
	c.Read(dir, time.Now(), 0)
	// The process exits: a zombie's maps are empty, and that read does
	// not replace the one made while it lived.
	if err := os.WriteFile(filepath.Join(dir, "maps"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if ms, err := c.Read(dir, time.Now(), 0); len(ms) != 0 || err != nil {
		t.Fatalf("zombie: %+v, %v", ms, err)
	}
	if ms, _, ok := c.Last(dir); !ok || len(ms) != 2 {
		t.Fatalf("Last after a zombie's read: %+v, %v", ms, ok)
	}
	os.Remove(filepath.Join(dir, "maps")) // reaped
	if _, err := c.Read(dir, time.Now(), 0); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("gone process: err %v", err)
	}
	// The last read made while it lived stays for naming its samples,
	// until Forget.
	ms, at, ok := c.Last(dir)
	if !ok || len(ms) != 2 || ms[1].Path != "/lib/libc.so" || time.Since(at) > time.Minute {
		t.Fatalf("Last of a gone process: %+v, %v, %v", ms, at, ok)
	}
	c.Forget(dir)
	if _, _, ok := c.Last(dir); ok || c.Stats().Processes != 0 {
		t.Fatalf("a forgotten process's read is kept: %+v", c.Stats())
	}

	bad := fakeProc(t, "1000-2000 r-xp 00000000 fe:00 11 /bin/prog\nnot a mapping\n")
	ms, err := c.Read(bad, time.Now(), 0)
	var me *MapsError
	if !errors.As(err, &me) || me.Line != 2 || len(ms) != 1 {
		t.Fatalf("malformed: %+v, %v", ms, err)
	}
	// The mappings before the bad line, and the error, are kept.
	ms, err = c.Read(bad, time.Now().Add(-time.Second), 0)
	if !errors.As(err, &me) || len(ms) != 1 || c.Stats().Reused != 1 {
		t.Fatalf("malformed, reused: %+v, %v, %+v", ms, err, c.Stats())
	}
}

func TestSnapshotsBounded(t *testing.T) {
	c := NewSnapshots()
	c.max = 8
	var dirs []string
	for i := range 20 {
		dirs = append(dirs, fakeProc(t, fmt.Sprintf("%x-%x r-xp 00000000 fe:00 %d /bin/p%d\n", 0x1000*(i+1), 0x1000*(i+2), i+1, i)))
		if _, err := c.Read(dirs[i], time.Now(), 0); err != nil {
			t.Fatal(err)
		}
		if n := c.Stats().Processes; n > c.max {
			t.Fatalf("%d reads kept, more than %d", n, c.max)
		}
	}
	// The latest read is kept; the first went first.
	c.Read(dirs[19], time.Now().Add(-time.Minute), 0)
	c.Read(dirs[0], time.Now().Add(-time.Minute), 0)
	if s := c.Stats(); s.Reused != 1 || s.Reads != 21 {
		t.Fatalf("stats: %+v", s)
	}
}

func TestSnapshotsSelf(t *testing.T) {
	c := NewSnapshots()
	ms, err := c.Read("/proc/self", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Readlink("/proc/self/exe")
	for _, m := range ms {
		if !m.Exec() {
			t.Errorf("kept a mapping that is not executable: %+v", m)
		}
		if m.Path == exe {
			return
		}
	}
	t.Fatalf("no mapping of %s in %+v", exe, ms)
}
