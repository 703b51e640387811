package sampler

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

func TestRowAllocator(t *testing.T) {
	a := newRowAllocator(100)
	x, ok1 := a.alloc(40)
	y, ok2 := a.alloc(40)
	_, ok3 := a.alloc(40)
	if !ok1 || !ok2 || ok3 || x != 0 || y != 40 || a.used != 80 {
		t.Fatalf("alloc: %d %v, %d %v, third %v, used %d", x, ok1, y, ok2, ok3, a.used)
	}
	if err := a.release(x, 40); err != nil {
		t.Fatal(err)
	}
	if err := a.release(x, 40); err == nil {
		t.Error("double release accepted")
	}
	if err := a.release(90, 20); err == nil {
		t.Error("release past the end accepted")
	}
	// Freed space is reused; neighbours merge back into one extent.
	if z, ok := a.alloc(30); !ok || z != 0 {
		t.Fatalf("alloc after release: %d %v", z, ok)
	}
	a.release(0, 30)
	a.release(y, 40)
	if len(a.free) != 1 || a.free[0] != (extent{0, 100}) || a.used != 0 {
		t.Fatalf("after releasing everything: free %v used %d", a.free, a.used)
	}
	if _, ok := a.alloc(0); ok {
		t.Error("zero-row allocation succeeded")
	}
}

func TestParseExecMappings(t *testing.T) {
	maps := `55d0c0a00000-55d0c0a01000 r--p 00000000 fd:01 1234 /usr/bin/x
55d0c0a01000-55d0c0a05000 r-xp 00001000 fd:01 1234 /usr/bin/x
7f0000000000-7f0000100000 r-xp 00028000 fd:01 99 /opt/my app/lib.so (deleted)
7f0000200000-7f0000201000 rwxp 00000000 00:00 0
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
`
	ms, err := parseExecMappings(strings.NewReader(maps))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 4 {
		t.Fatalf("got %d executable mappings, want 4: %+v", len(ms), ms)
	}
	if m := ms[0]; m.start != 0x55d0c0a01000 || m.end != 0x55d0c0a05000 || m.off != 0x1000 || m.path != "/usr/bin/x" || m.inode != "1234" {
		t.Errorf("mapping 0: %+v", m)
	}
	if ms[1].path != "/opt/my app/lib.so" {
		t.Errorf("path with a space and (deleted): %q", ms[1].path)
	}
	if ms[2].path != "" || ms[2].special != "" {
		t.Errorf("anonymous mapping: %+v", ms[2])
	}
	if ms[3].special != "[vdso]" {
		t.Errorf("vdso: %+v", ms[3])
	}
	for _, bad := range []string{"zz-10 r-xp 0 00:00 0\n", "10-5 r-xp 0 00:00 0\n", "10-20 r-xp\n"} {
		if _, err := parseExecMappings(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseExecMappings(f *testing.F) {
	f.Add("55d0c0a01000-55d0c0a05000 r-xp 00001000 fd:01 1234 /usr/bin/x\n")
	f.Add("7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]\n")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := parseExecMappings(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.end <= m.start {
				t.Fatalf("empty range accepted: %+v", m)
			}
		}
	})
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestTableLifecycle checks that processes mapping the same files share
// one table per file, and that tables are freed when the last process
// mapping them exits.
func TestTableLifecycle(t *testing.T) {
	testenv.RequireRoot(t)
	defer func(d time.Duration) { tableLinger = d }(tableLinger)
	tableLinger = 0 // freed at once
	a := startWorkload(t, "nofp-c", "60")
	b := startWorkload(t, "nofp-c", "60")
	s, err := Open(Options{Frequency: 199, Pids: []uint32{uint32(a.Process.Pid), uint32(b.Process.Pid)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()

	// The tables of processes found at Open are loaded in the background.
	waitFor(t, "the tables of both processes", func() bool { ts := s.TableStats(); return ts.Processes == 2 && ts.Files >= 3 })
	both := s.TableStats()
	t.Logf("two processes: %+v", both)
	if both.Processes != 2 || both.Files < 3 || both.Builds != uint64(both.Files) {
		t.Fatalf("want 2 processes sharing ≥ 3 files (program, libc, ld.so, vDSO), each built once: %+v", both)
	}
	a.Process.Kill()
	a.Wait()
	waitFor(t, "the first exit", func() bool { return s.TableStats().Processes == 1 })
	one := s.TableStats()
	if one.Files != both.Files || one.Rows != both.Rows {
		t.Errorf("tables changed while another process still maps them: %+v, before %+v", one, both)
	}
	b.Process.Kill()
	b.Wait()
	waitFor(t, "the second exit", func() bool { return s.TableStats().Processes == 0 })
	// Rows return to the allocator at the end of a burst of requests.
	waitFor(t, "rows to be freed", func() bool { ts := s.TableStats(); return ts.Files <= 1 && ts.Rows < both.Rows/4 })
	none := s.TableStats()
	t.Logf("no process: %+v", none)
	if none.Rows >= both.Rows/4 {
		t.Errorf("rows not freed: %d in use, %d with the processes", none.Rows, both.Rows)
	}
}

// TestTableLinger checks that a table outlives the last process mapping its
// file for a while, so that the next run of the same program is not built
// again, and that lingering tables make room when the row array is full.
func TestTableLinger(t *testing.T) {
	testenv.RequireRoot(t)
	a := startWorkload(t, "nofp-c", "60")
	s, err := Open(Options{Frequency: 199, Pids: []uint32{uint32(a.Process.Pid)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := runEvents(s)
	defer stop()
	// The tables of a process found at Open are loaded in the background:
	// wait until they are in place.
	waitFor(t, "the tables of the first run", func() bool { ts := s.TableStats(); return ts.Processes == 1 && ts.Files >= 3 })
	first := s.TableStats()
	a.Process.Kill()
	a.Wait()
	waitFor(t, "the exit", func() bool { return s.TableStats().Processes == 0 })
	if idle := s.TableStats(); idle.Rows != first.Rows {
		t.Errorf("rows changed as the process exited: %+v, before %+v", idle, first)
	}

	b := startWorkload(t, "nofp-c", "60")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// b's exec event may reach the event loop after the load and drop
	// the process again (the next sample would announce it): load until
	// it stays.
	waitFor(t, "the second run's tables", func() bool {
		s.tables.load(ctx, []uint32{uint32(b.Process.Pid)})
		return s.TableStats().Processes == 1
	})
	again := s.TableStats()
	t.Logf("first run: %+v; second run: %+v", first, again)
	if again.Processes != 1 || again.Builds != first.Builds || again.Rows != first.Rows {
		t.Errorf("the second run of the program built tables again: %+v, first run %+v", again, first)
	}

	// Expired (or needed for room), an unmapped table is freed.
	b.Process.Kill()
	b.Wait()
	waitFor(t, "the second exit", func() bool { return s.TableStats().Processes == 0 })
	done := make(chan struct{})
	s.tables.reqs <- tableReq{kind: evExpireAll, done: done}
	<-done
	waitFor(t, "rows to be freed", func() bool { return s.TableStats().Rows < first.Rows/4 })
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
	if ts.RowsCapacity != 4096 || ts.Rows > 4096 || ts.NoSpace == 0 || ts.Files == 0 {
		t.Errorf("want a 4096-row array, some files loaded and libc refused: %+v", ts)
	}
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

// TestHint checks that Drain asks for a new scan of a process when one of
// its stacks holds an address outside the mappings of its last scan (a
// library loaded since), at most once per rescanInterval.
func TestHint(t *testing.T) {
	m := &tableManager{
		reqs:     make(chan tableReq, 4),
		known:    map[uint32][][2]uint64{7: {{0x1000, 0x2000}, {0x5000, 0x6000}}},
		lastHint: map[uint32]time.Time{},
	}
	now := time.Now()
	m.hint(7, []uint64{0x1800, 0x5000}, now)
	m.hint(8, []uint64{0x9000}, now) // unknown process: nothing to compare
	if len(m.reqs) != 0 {
		t.Fatalf("%d requests for addresses inside known mappings", len(m.reqs))
	}
	m.hint(7, []uint64{0x1800, 0x3000}, now)
	if len(m.reqs) != 1 {
		t.Fatalf("%d requests for an address outside the mappings, want 1", len(m.reqs))
	}
	if r := <-m.reqs; r.kind != evRescan || r.pid != 7 {
		t.Errorf("request %+v, want a rescan of 7", r)
	}
	m.hint(7, []uint64{0x3000}, now.Add(time.Second))
	m.hint(7, []uint64{0x3000}, now.Add(rescanInterval+time.Second))
	if len(m.reqs) != 1 {
		t.Errorf("%d requests in two intervals, want 1", len(m.reqs))
	}
}

// TestRescanAfterDlopen runs a program that loads a library built without
// frame pointers after its tables were loaded: Drain notices addresses
// outside the known mappings, the worker reads the mappings again, and the
// library's stacks unwind to _start from then on.
func TestRescanAfterDlopen(t *testing.T) {
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
	if after.Files <= before.Files {
		t.Errorf("no table loaded for the library: %d files before, %d after", before.Files, after.Files)
	}
	if whole < 100 {
		t.Errorf("only %d of %d samples in the library reach _start", whole, inLib)
	}
}
