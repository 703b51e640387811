package sampler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/scorch-profiler/scorch/bpf"
	"github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

func TestRowAllocator(t *testing.T) {
	a := newRowAllocator(100)
	x, ok := a.alloc(30)
	y, ok2 := a.alloc(30)
	z, ok3 := a.alloc(30)
	if !ok || !ok2 || !ok3 || x != 0 || y != 30 || z != 60 || a.used != 90 {
		t.Fatalf("alloc: %d %d %d used %d", x, y, z, a.used)
	}
	if _, ok := a.alloc(20); ok {
		t.Fatal("allocated 20 rows with 10 free")
	}
	if err := a.release(y, 30); err != nil {
		t.Fatal(err)
	}
	if err := a.release(y, 30); err == nil {
		t.Fatal("double release accepted")
	}
	if err := a.release(x, 30); err != nil {
		t.Fatal(err)
	}
	// x and y merged with each other: 60 contiguous rows.
	if r, ok := a.alloc(60); !ok || r != 0 {
		t.Fatalf("after merging frees: %d %v (free %v)", r, ok, a.free)
	}
	if err := a.release(95, 10); err == nil {
		t.Fatal("release past the end accepted")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func runEvents(s *Sampler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ReadEvents(ctx, func(Event) {})
	}()
	return func() { cancel(); <-done }
}

// sweepNow makes the table worker drop the file entries the walker has not
// used for tableLinger, and waits for it.
func sweepNow(s *Sampler) {
	done := make(chan struct{})
	s.tables.reqs <- request{sweep: true, done: done}
	<-done
}

// TestTablesShared checks that processes mapping the same files share one
// table per file, built once, and that the tables go once the walker has
// not used them for tableLinger.
func TestTablesShared(t *testing.T) {
	testenv.RequireRoot(t)
	a := startWorkload(t, "nofp-c", "60")
	b := startWorkload(t, "nofp-c", "60")
	s, err := Open(Options{Frequency: 199, Pids: []uint32{uint32(a.Process.Pid), uint32(b.Process.Pid)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()

	waitFor(t, "the tables of both processes", func() bool { ts := s.TableStats(); return ts.Tables >= 3 })
	time.Sleep(time.Second) // both sampled
	both := s.TableStats()
	t.Logf("two processes: %+v", both)
	if both.Tables < 3 || both.Builds != uint64(both.Tables) {
		t.Fatalf("want ≥ 3 tables (program, libc, ld.so, vDSO) shared by both processes, each built once: %+v", both)
	}
	a.Process.Kill()
	a.Wait()
	b.Process.Kill()
	b.Wait()
	defer func(d time.Duration) { tableLinger = d }(tableLinger)
	tableLinger = 0
	sweepNow(s)
	none := s.TableStats()
	t.Logf("no process, swept: %+v", none)
	if none.Tables > 1 || none.Rows >= both.Rows/4 { // the vDSO's stays
		t.Errorf("tables not freed: %+v, with the processes %+v", none, both)
	}
}

// TestTableLinger checks that the tables of a program outlive its process,
// so that the next run of the same program, which user space is told
// nothing about, unwinds whole from its first samples without building
// anything.
func TestTableLinger(t *testing.T) {
	testenv.RequireRoot(t)
	a := startWorkload(t, "nofp-c", "60")
	s, err := Open(Options{Frequency: 499, Pids: []uint32{uint32(a.Process.Pid)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()
	waitFor(t, "the tables of the first run", func() bool { return s.TableStats().Tables >= 3 })
	time.Sleep(500 * time.Millisecond)
	first := s.TableStats()
	a.Process.Kill()
	a.Wait()

	// The second run: a new process the sampler sees first in the kernel.
	b := testenv.StartWorkload(t, "nofp-c", "60")
	pid := uint32(b.Process.Pid)
	if err := s.SetFilter(Filter{IncludePids: []uint32{pid}}); err != nil {
		t.Fatal(err)
	}
	s.Drain()
	time.Sleep(time.Second)
	samples, _, err := s.Drain()
	if err != nil {
		t.Fatal(err)
	}
	again := s.TableStats()
	t.Logf("first run: %+v; second run: %+v", first, again)
	if again.Builds != first.Builds {
		t.Errorf("the second run of the program built tables again: %+v, first run %+v", again, first)
	}
	syms := symbolTable(t, pid)
	var n, whole uint64
	var bad []string
	for _, smp := range samples {
		if smp.Pid != pid || len(smp.User) == 0 {
			continue
		}
		n += smp.Count
		names := make([]string, len(smp.User))
		for i, pc := range smp.User {
			names[i] = name(syms, pc)
		}
		if names[len(names)-1] == "_start" && !smp.UserTruncated && !smp.UserCallerUnknown {
			whole += smp.Count
		} else if len(bad) < 5 {
			bad = append(bad, strings.Join(names, " ← "))
		}
	}
	if n < 100 || float64(whole) < 0.99*float64(n) {
		t.Errorf("second run's first second: %d of %d samples whole; some others:\n%s", whole, n, strings.Join(bad, "\n"))
	}
}

// TestTableMemoryBound checks that tables stay within UnwindTableBytes:
// libc's table (~23k rows) does not fit in 4096 rows and is left to frame
// pointers.
func TestTableMemoryBound(t *testing.T) {
	testenv.RequireRoot(t)
	w := startWorkload(t, "nofp-c", "60")
	s, err := Open(Options{Frequency: 199, Pids: []uint32{uint32(w.Process.Pid)}, UnwindTableBytes: 4096 * 8})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := s.TableStats()
	t.Logf("%+v", ts)
	if ts.RowsCapacity != 4096 || ts.Rows > 4096 || ts.NoSpace == 0 || ts.Tables == 0 {
		t.Errorf("want a 4096-row array, some files loaded and libc refused: %+v", ts)
	}
}

// TestLearnMappingAfterDlopen runs a program that loads a library built
// without frame pointers after sampling began: the kernel finds the new
// mapping itself (bpf_find_vma), asks for the library's table, and the
// library's stacks unwind to _start from then on.
func TestLearnMappingAfterDlopen(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	lib := filepath.Join(dir, "libhot.so")
	prog := filepath.Join(dir, "dlopener")
	write := func(name, src string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	libSrc := write("hot.c", `
volatile unsigned long sink;
__attribute__((noinline)) static void hot_leaf(void) { for (int i = 0; i < 100000; i++) sink += i; }
__attribute__((noinline)) static unsigned long hot_rec(int d) {
	if (d == 0) { hot_leaf(); return 1; }
	unsigned long r = hot_rec(d - 1);
	__asm__ volatile("" : "+r"(r));
	return r + d;
}
void hot(void) { for (;;) sink += hot_rec(8); }
`)
	progSrc := write("main.c", `
#include <dlfcn.h>
#include <unistd.h>
int main(int argc, char **argv) {
	char c;
	if (read(0, &c, 1) != 1) /* the test says when */
		return 1;
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) return 1;
	((void (*)(void))dlsym(h, "hot"))();
	return 0;
}
`)
	for _, args := range [][]string{
		{"-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC", "-o", lib, libSrc},
		{"-O2", "-g", "-fomit-frame-pointer", "-o", prog, progSrc, "-ldl"},
	} {
		if out, err := exec.Command(testenv.RequireTool(t, "gcc"), args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %v: %v\n%s", args, err, out)
		}
	}
	cmd := exec.Command(prog, lib)
	dlopenNow, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := uint32(cmd.Process.Pid)
	time.Sleep(200 * time.Millisecond)

	s, err := Open(Options{Frequency: 199, Pids: []uint32{pid}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()
	before := s.TableStats()
	dlopenNow.Write([]byte{1}) // dlopen now

	// Drain until the library's stacks come back whole.
	var whole, inLib uint64
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && whole < 100; {
		time.Sleep(300 * time.Millisecond)
		samples, _, err := s.Drain()
		if err != nil {
			t.Fatal(err)
		}
		syms := symbolTable(t, pid)
		for _, smp := range samples {
			if smp.Pid != pid || len(smp.User) == 0 || !strings.HasPrefix(name(syms, smp.User[0]), "hot") {
				continue
			}
			inLib += smp.Count
			if name(syms, smp.User[len(smp.User)-1]) == "_start" {
				whole += smp.Count
			}
		}
	}
	after := s.TableStats()
	t.Logf("tables before dlopen %+v, after %+v; %d samples in the library, %d of them whole", before, after, inLib, whole)
	if after.Requests <= before.Requests || after.Tables <= before.Tables {
		t.Errorf("the kernel asked for no table for the library: before %+v, after %+v", before, after)
	}
	if whole < 100 {
		t.Errorf("only %d of %d samples in the library reach _start", whole, inLib)
	}
}

// TestTableCacheAcrossRestart checks that a sampler opened again with the
// same TableCacheDir reads the tables of files it saw before from disk
// instead of building them.
func TestTableCacheAcrossRestart(t *testing.T) {
	testenv.RequireRoot(t)
	w := startWorkload(t, "nofp-c", "60")
	dir := t.TempDir()
	open := func() TableStats {
		s, err := Open(Options{Frequency: 199, Pids: []uint32{uint32(w.Process.Pid)}, TableCacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.TableStats() // Open loaded the tables of the process before returning
	}
	first := open()
	second := open()
	t.Logf("first open: %+v; second: %+v", first, second)
	if first.Tables < 3 || first.CacheHits != 0 {
		t.Fatalf("first open: want ≥ 3 tables built, none from the cache: %+v", first)
	}
	// Every table but the vDSO's (not cached: it is read from memory) comes
	// from the cache the second time.
	if second.Tables != first.Tables || second.CacheHits < uint64(first.Tables-1) || second.Builds > 1 {
		t.Errorf("second open built again: %+v (first %+v)", second, first)
	}
}

// TestWarmSharedLibraries checks that a sampler of every process loads the
// table of a library that running processes share (libc) by itself, with
// no sample asking for it: a program started after the sampler then finds
// libc's table in place. The include filter names a cgroup that does not
// exist, so nothing is sampled and the kernel requests nothing.
func TestWarmSharedLibraries(t *testing.T) {
	testenv.RequireRoot(t)
	a := startWorkload(t, "nofp-c", "60")
	startWorkload(t, "nofp-c", "60") // a second process mapping libc
	dir := fmt.Sprintf("/proc/%d", a.Process.Pid)
	var libc process.Mapping
	waitFor(t, "libc in the workload's maps", func() bool {
		maps, _ := process.ReadMaps(dir)
		for _, mp := range maps {
			if mp.Exec() && strings.HasPrefix(filepath.Base(mp.Path), "libc.so") {
				libc = mp
				return true
			}
		}
		return false
	})
	f, err := process.OpenMapped(dir, libc)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := kernelKey(f.Fd(), libc)
	f.Close()
	if !ok {
		t.Skipf("%s's file system gives no inode generation: the table is built, its kernel entry waits for a request", libc.Path)
	}
	s, err := Open(Options{Frequency: 99, Filter: Filter{IncludeCgroups: []uint64{1 << 62}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v bpf.ScorchUnwindFile
	waitFor(t, "libc's table in the kernel", func() bool {
		return s.objs.UnwindFiles.Lookup(key, &v) == nil && v.Nrows > 0
	})
	if ts := s.TableStats(); ts.Requests != 0 {
		t.Errorf("the kernel asked for %d tables with nothing sampled: %+v", ts.Requests, ts)
	}
	t.Logf("libc (%s): %d rows, loaded without a request; %+v", libc.Path, v.Nrows, s.TableStats())
}

// TestDeferredFirstSamples starts a stripped Go program after a sampler
// of every process opened, so that its first samples meet its table while
// it is being built (a builder goroutine's job: its .gopclntab is big):
// those samples must be deferred to user space and finished there once the
// table is in, not walked by frame pointer. Of the program's samples, at
// most 0.5% may be cut short or have their leaf's caller marked unknown
// (3-4% without deferral in a run of this length, 1.5 s; the rest, 0.2-0.3%,
// are a Go frame larger than the 8 KiB of stack a deferred sample carries
// and system stacks whose goroutine's frames the kernel's walk lacks).
func TestDeferredFirstSamples(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.Workload(t, "field-go")
	// Every process but this test's own: its table (a big Go binary, new
	// to the sampler) would take the builder for a while and hold up the
	// workload's.
	s, err := Open(Options{Frequency: 999, Filter: Filter{ExcludePids: []uint32{uint32(os.Getpid())}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()
	cmd := exec.Command(bin, "1.5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var all []Sample
	held := 0 // drains before which samples of the program were held
	for done := false; !done; {
		drain := s.Drain
		select {
		case <-exited:
			done, drain = true, s.DrainFinal
		case <-time.After(200 * time.Millisecond):
		}
		if s.HoldsDeferred(pid) {
			held++
		}
		smp, _, err := drain()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, smp...)
	}
	if s.HoldsDeferred(pid) {
		t.Errorf("deferred samples of the program held after the final drain")
	}
	t.Logf("deferred samples held in user space before %d drains", held)
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var n, bad uint64
	for _, smp := range all {
		if smp.Pid != pid || len(smp.User) == 0 {
			continue
		}
		n += smp.Count
		if smp.UserTruncated || smp.UserCallerUnknown {
			bad += smp.Count
		}
	}
	ts := s.TableStats()
	t.Logf("%d samples of the program, %d cut short or with an unknown caller; deferred %d (lost %d, %d bytes); finished %d, incomplete %d", n, bad, st.Deferred, st.LostDeferred, ts.DeferredBytes, ts.DeferredFinished, ts.DeferredIncomplete)
	if n < 500 {
		t.Fatalf("only %d samples of the program", n)
	}
	if st.Deferred == 0 || ts.DeferredFinished == 0 {
		t.Errorf("no sample was deferred and finished (deferred %d, finished %d): the table was in before the first sample?", st.Deferred, ts.DeferredFinished)
	}
	if float64(bad) > 0.005*float64(n) {
		t.Errorf("%d of %d samples (%.2f%%) cut short or with an unknown caller, want at most 0.5%%", bad, n, 100*float64(bad)/float64(n))
	}
}

// TestMappingGoneAsksAgain checks the answer to a request whose process is
// alive but no longer maps what it asked about (it exec'd again: a shell
// running its command): the kernel's placeholder goes, so that the next
// process mapping the file asks again, and no negative answer is kept. A
// negative answer once left the dynamic loader without a table for ten
// seconds on a busy host, and every program started in them with broken
// stacks.
func TestMappingGoneAsksAgain(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := Open(Options{Frequency: 99, Pids: []uint32{uint32(os.Getpid())}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	key := fileKey{Ino: 1<<40 + 7, Dev: 1, Gen: 3}
	if err := s.tables.files.Put(key, bpf.ScorchUnwindFile{State: uint32(bpf.ScorchUnwindFileStateUNWIND_FILE_PENDING), LastUsed: monotonic()}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	// A range no process maps: below the lowest address mmap hands out.
	s.tables.reqs <- request{key: key, pid: uint32(os.Getpid()), start: 0x1000, end: 0x2000, done: done}
	<-done
	var v bpf.ScorchUnwindFile
	if err := s.tables.files.Lookup(key, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the kernel's entry for a mapping gone from a live process: %+v (err %v), want none (asked again)", v, err)
	}
	sweepNow(s) // a request after ours: the worker is done with ours
	if e := s.tables.entries[key]; e != nil {
		t.Errorf("a negative answer was kept: %+v", e)
	}
}

// TestHeldPids: the count of a process's deferred samples in user space
// goes up with each received and down with each a drain takes.
func TestHeldPids(t *testing.T) {
	var h heldPids
	if h.holds(7) {
		t.Fatal("holds before anything was received")
	}
	h.add(7, 1)
	h.add(7, 1)
	h.add(8, 1)
	h.add(7, -1)
	if !h.holds(7) || !h.holds(8) {
		t.Fatalf("after 2 of 7 and 1 of 8 received, 1 of 7 taken: holds(7) %v, holds(8) %v", h.holds(7), h.holds(8))
	}
	h.add(7, -1)
	h.add(8, -1)
	if h.holds(7) || h.holds(8) || len(h.n) != 0 {
		t.Fatalf("all taken: holds(7) %v, holds(8) %v, %d entries", h.holds(7), h.holds(8), len(h.n))
	}
}

// TestOpenRequestedPath checks the name a requested file is opened under:
// opened through map_files (the very file mapped), it is named by the path
// the process mapped, which the symbolizer gives the frames of a process
// that exited before its maps were read (it finds the file open by its
// inode), not /proc/PID/map_files/START-END.
func TestOpenRequestedPath(t *testing.T) {
	testenv.RequireRoot(t)
	maps, err := process.ReadMaps("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	m := &tableManager{procRoot: "/proc"}
	n := 0
	for _, mp := range maps {
		if !mp.Exec() || mp.Anonymous() || mp.Pseudo() {
			continue
		}
		n++
		r := request{pid: uint32(os.Getpid()), start: mp.Start, end: mp.End}
		m.openRequested(&r)
		if r.file == nil {
			t.Fatalf("%s: not opened through map_files: %v", mp.Path, r.openErr)
		}
		r.file.Close()
		if r.path != mp.Path {
			t.Errorf("mapping %x-%x of %s opened as %q", mp.Start, mp.End, mp.Path, r.path)
		}
	}
	if n == 0 {
		t.Fatal("no file-backed executable mapping in /proc/self/maps")
	}
}
