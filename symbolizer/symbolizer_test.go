package symbolizer

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	proc "github.com/scorch-profiler/scorch/internal/process"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// workload is testenv.Workload, by the name this package's tests call it.
var workload = testenv.Workload

// start runs a workload and waits until its binary is mapped.
func start(t testing.TB, path string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitMapped(t, cmd.Process.Pid, filepath.Base(path))
	return cmd
}

func waitMapped(t testing.TB, pid int, base string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
		if bytes.Contains(data, []byte("/"+base+"\n")) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d never mapped %s", pid, base)
}

// runtimeAddrs maps ELF virtual addresses of file to the addresses they
// have in process pid, through its executable mapping of the file.
func runtimeAddrs(t testing.TB, pid int, file string, vaddrs []uint64) []uint64 {
	t.Helper()
	return runtimeAddrsAs(t, pid, file, filepath.Base(file), vaddrs)
}

// runtimeAddrsAs is runtimeAddrs for a copy of file mapped under the base
// name mapped.
func runtimeAddrsAs(t testing.TB, pid int, file, mapped string, vaddrs []uint64) []uint64 {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mf, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	ms, err := proc.ParseMaps(mf)
	if err != nil {
		t.Fatal(err)
	}
	ms = slices.DeleteFunc(ms, func(m proc.Mapping) bool { return !m.Exec() })
	var out []uint64
	for _, va := range vaddrs {
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD || va < p.Vaddr || va >= p.Vaddr+p.Filesz {
				continue
			}
			off := va - p.Vaddr + p.Off
			for _, m := range ms {
				if filepath.Base(m.Path) == mapped && off >= m.Offset && off < m.Offset+m.End-m.Start {
					out = append(out, m.Start+off-m.Offset)
				}
			}
		}
	}
	if len(out) != len(vaddrs) {
		t.Fatalf("only %d of %d addresses are mapped in pid %d", len(out), len(vaddrs), pid)
	}
	return out
}

// funcAddrs samples addresses inside the sized function symbols of file.
func funcAddrs(t testing.TB, file string, stride uint64, keep func(string) bool) ([]uint64, []string) {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []uint64
	var names []string
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || (keep != nil && !keep(s.Name)) {
			continue
		}
		for a := s.Value; a < s.Value+s.Size; a += stride {
			addrs = append(addrs, a)
			names = append(names, s.Name)
		}
	}
	return addrs, names
}

// addr2line runs `tool args... file` with addrs on stdin and returns the
// first line of every answer (the function) and the second (file:line).
func addr2line(t testing.TB, addrs []uint64, tool ...string) (fns, pos []string) {
	t.Helper()
	var in bytes.Buffer
	for _, a := range addrs {
		fmt.Fprintf(&in, "%#x\n", a)
	}
	cmd := exec.Command(tool[0], tool[1:]...)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool[0], err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fns = append(fns, sc.Text())
		sc.Scan()
		pos = append(pos, sc.Text())
	}
	if len(fns) != len(addrs) {
		t.Fatalf("%s answered %d of %d addresses", tool[0], len(fns), len(addrs))
	}
	return fns, pos
}

func TestResolveUserC(t *testing.T) {
	bin := workload(t, "symtest-c")
	cmd := start(t, bin)
	pid := uint32(cmd.Process.Pid)
	s := New(Options{})
	defer s.Close()
	if err := s.Observe(pid); err != nil {
		t.Fatal(err)
	}
	vaddrs, _ := funcAddrs(t, bin, 5, nil)
	addrs := runtimeAddrs(t, cmd.Process.Pid, bin, vaddrs)
	want, wantPos := addr2line(t, vaddrs, testenv.RequireTool(t, "addr2line"), "-f", "-e", bin)
	same := 0
	var m0 *Mapping
	for i, a := range addrs {
		fr := s.ResolveUser(pid, a)
		if fr.Kind != KindUser || fr.Mapping == nil || len(fr.Lines) == 0 {
			t.Fatalf("ResolveUser(%#x) = %+v", a, fr)
		}
		if m0 == nil {
			m0 = fr.Mapping
		} else if fr.Mapping != m0 {
			t.Errorf("ResolveUser(%#x): Mapping %p, want the same %p for one mapping", a, fr.Mapping, m0)
		}
		l := fr.Lines[0]
		got := fmt.Sprintf("%s %s:%d", l.Function, l.File, l.Line)
		w := want[i] + " " + wantPos[i]
		if i := strings.Index(w, " (discriminator"); i > 0 {
			w = w[:i]
		}
		if got == w {
			same++
		} else if testing.Verbose() {
			t.Logf("%#x: got %s, addr2line %s", vaddrs[i], got, w)
		}
	}
	t.Logf("%d/%d addresses agree with addr2line -f (function, file:line)", same, len(addrs))
	if float64(same) < 0.995*float64(len(addrs)) {
		t.Errorf("only %d of %d addresses agree with addr2line", same, len(addrs))
	}
	if m0.BuildID == "" || m0.File != bin {
		t.Errorf("mapping %+v: want File %s and a build id", m0, bin)
	}
	st := s.Stats()
	if st.UserLookups != uint64(len(addrs)) || st.Processes != 1 || st.CacheEntries == 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestResolveUnknown(t *testing.T) {
	cmd := start(t, workload(t, "symtest-c"))
	s := New(Options{})
	defer s.Close()
	fr := s.ResolveUser(uint32(cmd.Process.Pid), 0x10)
	if len(fr.Lines) != 1 || fr.Lines[0].Function != "[unknown]" || fr.Mapping != nil {
		t.Errorf("ResolveUser(0x10) = %+v, want [unknown]", fr)
	}
	if st := s.Stats(); st.MissNoMapping != 1 {
		t.Errorf("MissNoMapping = %d, want 1", st.MissNoMapping)
	}
}

// TestKernelMappings checks the samples of a process that exited before
// its maps were read (a 50 ms process on a busy host): the mapping comes
// from the kernel's unwinder (UseKernelMappings, here a function giving
// what the process's maps said while it ran), the file from the objects
// already open for another process running the same program, found by
// device and inode, and the names agree with addr2line.
func TestKernelMappings(t *testing.T) {
	bin := workload(t, "symtest-c")
	first := start(t, bin)
	gone := start(t, bin)
	maps, err := proc.ReadMaps(fmt.Sprintf("/proc/%d", gone.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	vaddrs, _ := funcAddrs(t, bin, 17, nil)
	addrs := runtimeAddrs(t, gone.Process.Pid, bin, vaddrs)
	gone.Process.Kill()
	gone.Wait()

	s := New(Options{})
	defer s.Close()
	if err := s.Observe(uint32(first.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	pid := uint32(gone.Process.Pid)
	var asked int
	s.UseKernelMappings(func(p uint32) []proc.Mapping {
		asked++
		if p != pid {
			t.Errorf("asked about pid %d, want %d", p, pid)
		}
		var out []proc.Mapping
		for _, m := range maps {
			if m.Exec() {
				out = append(out, proc.Mapping{Start: m.Start, End: m.End, Offset: m.Offset, Dev: m.Dev, Inode: m.Inode})
			}
		}
		return out
	})
	want, _ := addr2line(t, vaddrs, testenv.RequireTool(t, "addr2line"), "-f", "-e", bin)
	same := 0
	for i, a := range addrs {
		fr := s.ResolveUser(pid, a)
		if fr.Mapping == nil || fr.Mapping.File != bin {
			t.Fatalf("ResolveUser(%#x) of an exited process = %+v, want a frame of %s", a, fr, bin)
		}
		if fr.Lines[0].Function == want[i] {
			same++
		}
	}
	if float64(same) < 0.995*float64(len(addrs)) {
		t.Errorf("only %d of %d addresses of the exited process agree with addr2line", same, len(addrs))
	}
	if asked != 1 {
		t.Errorf("the kernel was asked %d times, want once (its mappings are kept)", asked)
	}
	exec := 0
	for _, m := range maps {
		if m.Exec() {
			exec++
		}
	}
	if st := s.Stats(); st.KernelMappings != uint64(exec) {
		t.Errorf("Stats().KernelMappings = %d, want %d (every executable mapping, at the first question)", st.KernelMappings, exec)
	}
	// Addresses in no mapping the kernel knows stay unknown, and do not
	// ask it again so soon (kernelMapsInterval).
	for _, a := range []uint64{0x10, 0x20} {
		if fr := s.ResolveUser(pid, a); fr.Lines[0].Function != "[unknown]" {
			t.Errorf("ResolveUser(%#x) = %+v, want [unknown]", a, fr)
		}
	}
	if asked != 1 {
		t.Errorf("the kernel was asked %d times after two addresses it knows no mapping of, want once", asked)
	}
}

// TestLastMapsOfExitedProcess checks the samples of a process that exited
// before the symbolizer read its maps, and whose mappings the kernel's
// list lacks (its stack was walked in user space): the read another user
// of the shared maps reads made while it lived (the unwind-table worker's,
// for a deferred sample) names them, with the file open for another
// process running the same program.
func TestLastMapsOfExitedProcess(t *testing.T) {
	bin := workload(t, "symtest-c")
	first := start(t, bin)
	gone := start(t, bin)
	pid := uint32(gone.Process.Pid)
	addr := hotAddr(t, gone.Process.Pid, bin, "round_all")

	s := New(Options{})
	defer s.Close()
	if err := s.Observe(uint32(first.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	s.UseKernelMappings(func(uint32) []proc.Mapping { return nil })
	dir := fmt.Sprintf("/proc/%d", pid)
	if _, err := s.Files().Maps().Read(dir, time.Now(), 0); err != nil {
		t.Fatal(err)
	}
	gone.Process.Kill()
	gone.Wait()
	fr := s.ResolveUser(pid, addr)
	if fr.Mapping == nil || fr.Mapping.File != bin || fr.Lines[0].Function != "round_all" {
		t.Fatalf("ResolveUser(%#x) of an exited process = %+v, want round_all in %s", addr, fr, bin)
	}
	s.Forget(pid)
	if _, _, ok := s.Files().Maps().Last(dir); ok {
		t.Errorf("the last read of a forgotten process is kept")
	}
}
