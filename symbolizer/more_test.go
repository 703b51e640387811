package symbolizer

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestStrippedGo resolves a running -ldflags=-s -w build and compares with
// go tool addr2line on its unstripped twin (outermost function, innermost
// file:line).
func TestStrippedGo(t *testing.T) {
	stripped, full := workload(t, "symtest-go-stripped"), workload(t, "symtest-go")
	cmd := start(t, stripped)
	pid := uint32(cmd.Process.Pid)
	s := New(Options{})
	defer s.Close()
	vaddrs, _ := funcAddrs(t, full, 41, nil)
	addrs := runtimeAddrs(t, cmd.Process.Pid, stripped, vaddrs)
	want, wantPos := addr2line(t, vaddrs, "go", "tool", "addr2line", full)
	same, inlined := 0, 0
	for i, a := range addrs {
		fr := s.ResolveUser(pid, a)
		outer, inner := fr.Lines[len(fr.Lines)-1], fr.Lines[0]
		if len(fr.Lines) > 1 {
			inlined++
		}
		if outer.Function == want[i] && fmt.Sprintf("%s:%d", inner.File, inner.Line) == wantPos[i] {
			same++
		} else if testing.Verbose() {
			t.Logf("%#x: got %s %s:%d, want %s %s", vaddrs[i], outer.Function, inner.File, inner.Line, want[i], wantPos[i])
		}
	}
	t.Logf("%d/%d addresses agree with go tool addr2line; %d have inlined frames", same, len(addrs), inlined)
	if float64(same) < 0.995*float64(len(addrs)) {
		t.Errorf("only %d of %d agree", same, len(addrs))
	}
	if inlined == 0 {
		t.Error("no inlined frames")
	}
}

// hotAddr returns the runtime address of the middle of function fn of bin
// in process pid.
func hotAddr(t *testing.T, pid int, bin, fn string) uint64 {
	t.Helper()
	return hotAddrAs(t, pid, bin, filepath.Base(bin), fn)
}

// hotAddrAs is hotAddr for a copy (or twin) of bin mapped as mapped.
func hotAddrAs(t *testing.T, pid int, bin, mapped, fn string) uint64 {
	t.Helper()
	vaddrs, names := funcAddrs(t, bin, 1<<20, func(n string) bool { return n == fn })
	if len(vaddrs) == 0 {
		t.Fatalf("no %s in %s", fn, bin)
	}
	_ = names
	return runtimeAddrsAs(t, pid, bin, mapped, vaddrs[:1])[0] + 4
}

// TestExitedProcess observes a process, kills it, and still resolves it.
func TestExitedProcess(t *testing.T) {
	bin := workload(t, "symtest-c")
	cmd := start(t, bin)
	pid := cmd.Process.Pid
	addr := hotAddr(t, pid, bin, "round_all")
	s := New(Options{})
	defer s.Close()
	if err := s.Observe(uint32(pid)); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatal("process still exists")
	}
	fr := s.ResolveUser(uint32(pid), addr)
	if fr.Lines[0].Function != "round_all" {
		t.Errorf("after exit: %+v, want round_all", fr.Lines)
	}
	s.Forget(uint32(pid))
	if st := s.Stats(); st.Processes != 0 {
		t.Errorf("after Forget: %d processes", st.Processes)
	}
}

// TestMountNamespace resolves a binary that exists only inside the
// process's own mount namespace (a tmpfs mounted after unshare -m).
func TestMountNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare")
	bin := workload(t, "symtest-c-nodebug")
	script := fmt.Sprintf("mount -t tmpfs none /mnt && cp %s /mnt/nsbin && exec /mnt/nsbin", bin)
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitMapped(t, cmd.Process.Pid, "nsbin")
	if _, err := os.Stat("/mnt/nsbin"); err == nil {
		t.Fatal("/mnt/nsbin is visible on the host: the test would prove nothing")
	}
	addr := hotAddrAs(t, cmd.Process.Pid, bin, "nsbin", "round_all")
	s := New(Options{})
	defer s.Close()
	fr := s.ResolveUser(uint32(cmd.Process.Pid), addr)
	if fr.Lines[0].Function != "round_all" || fr.Mapping.File != "/mnt/nsbin" {
		t.Errorf("got %+v in %+v, want round_all in /mnt/nsbin", fr.Lines, fr.Mapping)
	}
}

func TestKallsyms(t *testing.T) {
	testenv.RequireRoot(t) // other users read zero addresses
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 3 && (fl[2] == "schedule" || fl[2] == "do_sys_openat2" || fl[2] == "__x64_sys_getpid") {
			a, _ := strconv.ParseUint(fl[0], 16, 64)
			want[fl[2]] = a
		}
	}
	if len(want) == 0 || want["schedule"] == 0 {
		t.Fatalf("no schedule in /proc/kallsyms: %v", want)
	}
	s := New(Options{})
	defer s.Close()
	for name, a := range want {
		fr := s.ResolveKernel(a + 1)
		if fr.Kind != KindKernel || fr.Lines[0].Function != name || fr.Mapping == nil || fr.Mapping.File != "[kernel.kallsyms]" {
			t.Errorf("ResolveKernel(%#x) = %+v (mapping %+v), want %s", a+1, fr, fr.Mapping, name)
		}
	}
	if fr := s.ResolveKernel(0x1000); fr.Mapping != nil {
		t.Errorf("ResolveKernel(0x1000) = %+v, want no mapping", fr)
	}
}

// TestVDSO resolves clock_gettime in our own [vdso].
func TestVDSO(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	v := s.vdsoObject()
	if v == nil {
		t.Fatal("no vdso")
	}
	syms, err := v.pf.ELF.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	var sym elf.Symbol
	for _, x := range syms {
		if strings.Contains(x.Name, "clock_gettime") {
			sym = x
		}
	}
	if sym.Name == "" {
		t.Fatal("no clock_gettime in the vdso")
	}
	maps, _ := os.ReadFile("/proc/self/maps")
	m := regexp.MustCompile(`(?m)^([0-9a-f]+)-[0-9a-f]+ r-xp .*\[vdso\]$`).FindSubmatch(maps)
	if m == nil {
		t.Fatal("no [vdso] in our maps")
	}
	base, _ := strconv.ParseUint(string(m[1]), 16, 64)
	fr := s.ResolveUser(uint32(os.Getpid()), base+sym.Value-v.pf.Loads[0].Vaddr+v.pf.Loads[0].Off+2)
	if !strings.Contains(fr.Lines[0].Function, "clock_gettime") || fr.Mapping.File != "[vdso]" {
		t.Errorf("vdso clock_gettime resolved to %+v in %+v", fr.Lines, fr.Mapping)
	}
}

// TestJIT runs node with --perf-basic-prof and resolves a hot JS function
// from its perf map.
func TestJIT(t *testing.T) {
	node := testenv.RequireTool(t, "node")
	js := `function scorchHotLoop(n){let x=0;for(let i=0;i<n;i++){x=(x*31+i)|0}return x}
let s=0; for(;;){ s+=scorchHotLoop(1e6) }`
	cmd := exec.Command(node, "--perf-basic-prof", "-e", js)
	cmd.Dir = t.TempDir() // node writes isolate-*.log files there
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); os.Remove(fmt.Sprintf("/tmp/perf-%d.map", cmd.Process.Pid)) })
	pid := cmd.Process.Pid
	re := regexp.MustCompile(`(?m)^([0-9a-f]+) ([0-9a-f]+) (.*scorchHotLoop.*)$`)
	var m [][]byte
	for i := 0; i < 300 && m == nil; i++ {
		time.Sleep(20 * time.Millisecond)
		data, _ := os.ReadFile(fmt.Sprintf("/tmp/perf-%d.map", pid))
		m = re.FindSubmatch(data)
	}
	if m == nil {
		t.Fatal("scorchHotLoop never appeared in node's perf map")
	}
	start, _ := strconv.ParseUint(string(m[1]), 16, 64)
	s := New(Options{})
	defer s.Close()
	fr := s.ResolveUser(uint32(pid), start+1)
	if fr.Kind != KindJIT || fr.Lines[0].Function != string(m[3]) {
		t.Errorf("ResolveUser(%#x) = %+v, want KindJIT %s", start+1, fr, m[3])
	}
}

func TestDemangle(t *testing.T) {
	bin := workload(t, "symtest-cpp")
	cmd := start(t, bin)
	for _, tc := range []struct {
		mode DemangleMode
		want string
	}{
		{DemangleFull, "scorch::demo::work(std::vector<long, std::allocator<long> >&, int)"},
		{DemangleSimplified, "scorch::demo::work"},
		{DemangleNone, "_ZN6scorch4demo4workERSt6vectorIlSaIlEEi"},
	} {
		s := New(Options{Demangle: tc.mode})
		fr := s.ResolveUser(uint32(cmd.Process.Pid), hotAddr(t, cmd.Process.Pid, bin, "_ZN6scorch4demo4workERSt6vectorIlSaIlEEi"))
		l := fr.Lines[len(fr.Lines)-1]
		if l.Function != tc.want {
			t.Errorf("mode %d: %q, want %q", tc.mode, l.Function, tc.want)
		}
		if tc.mode != DemangleNone && l.SystemName != "_ZN6scorch4demo4workERSt6vectorIlSaIlEEi" {
			t.Errorf("mode %d: SystemName %q", tc.mode, l.SystemName)
		}
		s.Close()
	}
}

// TestCacheBound: with a tiny bound tables are evicted and reloaded, and
// the open files are shared by build id between processes.
func TestCacheBound(t *testing.T) {
	bin := workload(t, "symtest-c")
	a, b := start(t, bin), start(t, bin)
	gobin := workload(t, "symtest-go-stripped")
	g := start(t, gobin)
	s := New(Options{CacheBytes: 1})
	defer s.Close()
	ra := hotAddr(t, a.Process.Pid, bin, "round_all")
	rb := hotAddr(t, b.Process.Pid, bin, "round_all")
	rg := hotAddrAs(t, g.Process.Pid, workload(t, "symtest-go"), "symtest-go-stripped", "main.hot")
	for i := 0; i < 3; i++ {
		if fr := s.ResolveUser(uint32(a.Process.Pid), ra); fr.Lines[0].Function != "round_all" {
			t.Fatalf("a: %+v", fr.Lines)
		}
		if fr := s.ResolveUser(uint32(b.Process.Pid), rb); fr.Lines[0].Function != "round_all" {
			t.Fatalf("b: %+v", fr.Lines)
		}
		if fr := s.ResolveUser(uint32(g.Process.Pid), rg); fr.Lines[len(fr.Lines)-1].Function != "main.hot" {
			t.Fatalf("g: %+v", fr.Lines)
		}
	}
	st := s.Stats()
	if st.CacheEvictions == 0 || st.CacheEntries > 1 {
		t.Errorf("with a 1 byte bound: %+v", st)
	}
	s.Forget(uint32(a.Process.Pid))
	s.Forget(uint32(b.Process.Pid))
	s.Forget(uint32(g.Process.Pid))
	if st := s.Stats(); st.Processes != 0 {
		t.Errorf("after Forget: %+v", st)
	}
}

// TestObjectLinger checks that a file no process maps any more stays open
// for objectLinger, then is closed (its mapped sections with it) the next
// time the cache changes.
func TestObjectLinger(t *testing.T) {
	bin := workload(t, "symtest-c")
	a := start(t, bin)
	s := New(Options{})
	defer s.Close()
	ra := hotAddr(t, a.Process.Pid, bin, "round_all")
	if fr := s.ResolveUser(uint32(a.Process.Pid), ra); len(fr.Lines) == 0 || fr.Lines[0].Function != "round_all" {
		t.Fatalf("before: %+v", fr.Lines)
	}
	open := func() bool {
		s.files.mu.Lock()
		defer s.files.mu.Unlock()
		for _, o := range s.files.byKey {
			if o.path == bin || strings.HasSuffix(o.path, "/symtest-c") {
				return true
			}
		}
		return false
	}
	s.Forget(uint32(a.Process.Pid))
	if !open() {
		t.Fatal("the file was closed as soon as its last process was forgotten")
	}

	defer func(d time.Duration) { objectLinger = d }(objectLinger)
	objectLinger = 0
	// Any change of the cache expires what lingered too long: another
	// process, of another binary, forgotten.
	gobin := workload(t, "symtest-go-stripped")
	g := start(t, gobin)
	s.Observe(uint32(g.Process.Pid))
	s.Forget(uint32(g.Process.Pid))
	if open() {
		t.Error("the file of a forgotten process is still open past objectLinger")
	}
	if st := s.Stats(); st.Files != 0 || st.Processes != 0 {
		t.Errorf("after every process was forgotten: %+v", st)
	}
}
