package unwinder

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// procMapping is an executable file mapping of a process.
type procMapping struct {
	start, end, bias uint64
	off              uint64 // file offset of start
	path             string
	table            *Table
	syms             []elf.Symbol // function symbols sorted by address
}

// processMappings reads /proc/pid/maps and builds a table for every
// executable file mapping.
func processMappings(t testing.TB, pid int, cache map[string]*procMapping) []*procMapping {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []*procMapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.Contains(fields[1], "x") || !strings.HasPrefix(fields[5], "/") && fields[5] != "[vdso]" {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		off, _ := strconv.ParseUint(fields[2], 16, 64)
		path := fields[5]
		base := cache[path]
		if base == nil {
			var ef *elf.File
			var err error
			if path == "[vdso]" {
				// The vDSO (Go's nanotime1 and walltime call into it): an
				// ELF image in the process's memory.
				img := make([]byte, end-start)
				var mem *os.File
				if mem, err = os.Open(fmt.Sprintf("/proc/%d/mem", pid)); err == nil {
					_, err = mem.ReadAt(img, int64(start))
					mem.Close()
				}
				if err == nil {
					ef, err = elf.NewFile(bytes.NewReader(img))
				}
			} else {
				ef, err = elf.Open(path)
			}
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			tab, err := Build(ef, nil)
			if err != nil {
				t.Fatalf("Build(%s): %v", path, err)
			}
			base = &procMapping{path: path, table: tab}
			syms, _ := ef.Symbols()
			dyn, _ := ef.DynamicSymbols()
			for _, s := range append(syms, dyn...) {
				if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Value != 0 {
					base.syms = append(base.syms, s)
				}
			}
			slices.SortFunc(base.syms, func(a, b elf.Symbol) int { return int(int64(a.Value - b.Value)) })
			// Remember the vaddr-offset relation of the executable segment.
			for _, p := range ef.Progs {
				if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 {
					base.bias = p.Vaddr - p.Off // ELF vaddr = file offset + this
				}
			}
			ef.Close()
			cache[path] = base
		}
		m := *base
		m.start, m.end, m.off = start, end, off
		m.bias = start - (off + base.bias)
		out = append(out, &m)
	}
	return out
}

func findMapping(ms []*procMapping, pc uint64) *procMapping {
	for _, m := range ms {
		if m.start <= pc && pc < m.end {
			return m
		}
	}
	return nil
}

// symbolize names the function containing pc, or "path+0xoff" when the
// file has no symbol for it (stripped libc).
func symbolize(ms []*procMapping, pc uint64) string {
	m := findMapping(ms, pc)
	if m == nil {
		return fmt.Sprintf("%#x", pc)
	}
	rel := pc - m.bias
	i, _ := slices.BinarySearchFunc(m.syms, rel+1, func(s elf.Symbol, v uint64) int {
		switch {
		case s.Value < v:
			return -1
		case s.Value > v:
			return 1
		}
		return 0
	})
	for i--; i >= 0; i-- {
		s := m.syms[i]
		if s.Value <= rel && (rel < s.Value+s.Size || s.Size == 0) {
			return s.Name
		}
		if s.Value+s.Size <= rel {
			break
		}
	}
	return fmt.Sprintf("%s+%#x", m.path[strings.LastIndex(m.path, "/")+1:], rel)
}

// startWorkload runs a workload for the test's duration.
func startWorkload(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(workload(t, name), "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(300 * time.Millisecond) // let it reach its hot loops
	return cmd
}

// sampleStopped stops pid with ptrace, unwinds it with Unwind and resumes it.
func sampleStopped(t *testing.T, pid int, cache map[string]*procMapping) ([]string, []*procMapping) {
	t.Helper()
	names, _, ms := sampleStoppedFP(t, pid, cache)
	return names, ms
}

// sampleGoStopped is sampleStopped that also unwinds through the frame
// pointer chain alone (no tables), for comparison.
func sampleGoStopped(t *testing.T, pid int, cache map[string]*procMapping) (names, fpNames []string) {
	t.Helper()
	names, fpNames, _ = sampleStoppedFP(t, pid, cache)
	return names, fpNames
}

func sampleStoppedFP(t *testing.T, pid int, cache map[string]*procMapping) ([]string, []string, []*procMapping) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		t.Fatalf("PTRACE_ATTACH %d: %v", pid, err)
	}
	defer func() {
		unix.PtraceDetach(pid)
		unix.Kill(pid, unix.SIGCONT) // in case our SIGSTOP is still pending
	}()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
		t.Fatalf("waiting for %d to stop: %v (status %v)", pid, err, ws)
	}
	var regs unix.PtraceRegs
	if err := unix.PtraceGetRegs(pid, &regs); err != nil {
		t.Fatalf("PTRACE_GETREGS: %v", err)
	}
	ms := processMappings(t, pid, cache)
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	readMem := func(addr uint64, b []byte) error {
		_, err := mem.ReadAt(b, int64(addr))
		return err
	}
	tableFor := func(pc uint64) (*Table, uint64, bool) {
		if m := findMapping(ms, pc); m != nil {
			return m.table, m.bias, true
		}
		return nil, 0, false
	}
	pcs := Unwind(Regs{PC: regs.Rip, SP: regs.Rsp, FP: regs.Rbp}, readMem, tableFor, 256)
	names := make([]string, len(pcs))
	for i, pc := range pcs {
		names[i] = symbolize(ms, pc)
	}
	noTables := func(uint64) (*Table, uint64, bool) { return nil, 0, false }
	fpPCs := Unwind(Regs{PC: regs.Rip, SP: regs.Rsp, FP: regs.Rbp}, readMem, noTables, 256)
	fpNames := make([]string, len(fpPCs))
	for i, pc := range fpPCs {
		fpNames[i] = symbolize(ms, pc)
	}
	return names, fpNames, ms
}

// checkChain asserts that the stack ends at _start through main and that
// the known callers of each hot function of nofp-c follow it in order.
func checkChain(t *testing.T, names []string, chains map[string][]string) {
	t.Helper()
	if len(names) < 3 || names[len(names)-1] != "_start" {
		t.Errorf("stack does not end at _start: %v", names)
		return
	}
	if !slices.Contains(names, "main") {
		t.Errorf("stack has no main: %v", names)
	}
	for i, n := range names {
		want, ok := chains[n]
		if !ok {
			continue
		}
		// The listed callers must appear, in order, above frame i.
		j := i + 1
		for _, w := range want {
			for j < len(names) && names[j] != w {
				j++
			}
			if j == len(names) {
				t.Errorf("%s is not called from %v: %v", n, want, names)
				break
			}
		}
	}
}

func TestUnwindStoppedProcess(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("PTRACE_GETREGS register names are amd64")
	}
	cmd := startWorkload(t, "nofp-c")
	chains := map[string][]string{
		"cmp_ints":     {"phase_sort", "run", "main", "_start"},
		"cmp_key":      {"phase_search", "run", "main", "_start"},
		"leaf_work":    {"recurse", "phase_recurse", "run", "main", "_start"},
		"handler_work": {"on_sigprof", "run", "main", "_start"},
	}
	cache := map[string]*procMapping{}
	seen := map[string]int{}
	for i := 0; i < 40; i++ {
		names, _ := sampleStopped(t, cmd.Process.Pid, cache)
		seen[names[0]]++
		if names[0] == "handler_work" || names[0] == "on_sigprof" {
			seen["(in signal handler)"]++
		}
		if slices.Contains(names, "recurse") {
			depth := 0
			for _, n := range names {
				if n == "recurse" {
					depth++
				}
			}
			if names[0] == "leaf_work" && depth != 41 {
				t.Errorf("leaf_work under %d recurse frames, want 41: %v", depth, names)
			}
		}
		checkChain(t, names, chains)
		if t.Failed() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("innermost frames seen: %v", seen)
	if seen["cmp_ints"]+seen["cmp_key"]+seen["leaf_work"] == 0 {
		t.Errorf("no sample in the workload's hot functions: %v", seen)
	}
}

// TestUnwindStoppedProcessOthers unwinds the C++ and Rust workloads (no
// frame pointers in the program; libstdc++/libc without them either) and
// checks that every sample reaches _start through main.
func TestUnwindStoppedProcessOthers(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("PTRACE_GETREGS register names are amd64")
	}
	for _, name := range []string{"nofp-cpp", "nofp-rust"} {
		t.Run(name, func(t *testing.T) {
			cmd := startWorkload(t, name)
			cache := map[string]*procMapping{}
			seen := map[string]int{}
			for i := 0; i < 20; i++ {
				names, _ := sampleStopped(t, cmd.Process.Pid, cache)
				seen[names[0]]++
				checkChain(t, names, nil)
				if t.Failed() {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("innermost frames seen: %v", seen)
		})
	}
}
