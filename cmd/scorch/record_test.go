package main

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/testenv"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// These tests run `scorch record` for real: the BPF program is loaded into
// the running kernel and profiles real workloads from testdata/.

// requireRoot is testenv.RequireRoot, by the name this package's tests
// call it.
var requireRoot = testenv.RequireRoot

// workload starts testdata/bin/NAME with args and lets it reach its hot
// loop.
func workload(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := testenv.StartWorkload(t, name, args...)
	time.Sleep(200 * time.Millisecond)
	return cmd
}

// record runs `scorch record args...` in-process and parses the profile.
func record(t *testing.T, args ...string) (*profile.Profile, string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "x.pb.gz")
	var stdout, stderr bytes.Buffer
	if code := run(append([]string{"record", "-o", out}, args...), &stdout, &stderr); code != 0 {
		t.Fatalf("scorch record exited %d:\n%s", code, stderr.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatalf("parse %s: %v", out, err)
	}
	if err := p.CheckValid(); err != nil {
		t.Fatal(err)
	}
	return p, out, stderr.String()
}

func stackHas(s *profile.Sample, match func(string) bool) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function != nil && match(ln.Function.Name) {
				return true
			}
		}
	}
	return false
}

func is(name string) func(string) bool { return func(s string) bool { return s == name } }

// checkSplit asserts the 3:1 split of the cpuburn workloads and that the
// stacks reach main, judged on the samples actually got.
//
// Samples of the workload's process are of two kinds: those of its own
// code, whose stacks reach main (nearly all in hotA or hotB) and, for Go,
// where runtimePrefix ("runtime.") names them, the language runtime's own
// work on other threads or on the scheduler's stack (sysmon, the
// scheduler after a preemption, the garbage collector): those never reach
// main, and their share grows when a busy machine gives the workload less
// CPU (sysmon wakes by the clock, not by the workload's progress; 2.2% of
// the samples in one busy run, so a fixed 99% for main failed).
//
//   - hotA's share of the hot samples is 3/4 by construction, within
//     testenv.Sigmas binomial standard deviations of the count got.
//   - A hot sample whose stack does not reach main is a broken unwind: the
//     frame-pointer walk is exact for these binaries (every C function
//     keeps a frame pointer; Go's frameless leaves skip their caller, not
//     main). missSlack (1%) is room for a user stack that could not be
//     read (a BPF program cannot fault in a stack page that is not
//     resident).
//   - A sample that neither reaches main nor is the runtime's own is a
//     miss too, with the same room.
func checkSplit(t *testing.T, p *profile.Profile, pid int, hotA, hotB, main, runtimePrefix string) {
	t.Helper()
	const missSlack = 0.01
	var n, a, b, hot, hotMain, reachMain, runtime int64
	for _, s := range p.Sample {
		if len(s.NumLabel["pid"]) == 0 || s.NumLabel["pid"][0] != int64(pid) {
			continue
		}
		v := s.Value[0]
		n += v
		inA, inB, inMain := stackHas(s, is(hotA)), stackHas(s, is(hotB)), stackHas(s, is(main))
		if inA || inB {
			hot += v
			if inA {
				a += v
			} else {
				b += v
			}
			if inMain {
				hotMain += v
			}
		}
		switch {
		case inMain:
			reachMain += v
		case runtimePrefix != "" && runtimeOnly(s, runtimePrefix):
			runtime += v
		}
	}
	t.Logf("pid %d: %d samples: %d in %s or %s (%s %d, %s %d), %d of them reaching %s; %d reaching %s in all; %d of the runtime's own",
		pid, n, hot, hotA, hotB, hotA, a, hotB, b, hotMain, main, reachMain, main, runtime)
	if hot < 100 {
		t.Fatalf("only %d samples in %s or %s: too few to judge", hot, hotA, hotB)
	}
	testenv.CheckShare(t, hotA+"'s share of the hot samples", a, hot, 0.75, 0)
	testenv.CheckShare(t, "hot samples whose stack reaches "+main, hotMain, hot, 1, missSlack)
	testenv.CheckShare(t, "samples reaching "+main+" or of the runtime's own", reachMain+runtime, n, 1, missSlack)
}

// runtimeOnly reports whether every user frame of s is a function of the
// language runtime (named with prefix); kernel frames do not count.
func runtimeOnly(s *profile.Sample, prefix string) bool {
	user := 0
	for _, l := range s.Location {
		if isKernel(l) {
			continue
		}
		for _, ln := range l.Line {
			if ln.Function == nil || !strings.HasPrefix(ln.Function.Name, prefix) {
				return false
			}
			user++
		}
	}
	return user > 0
}

// isKernel reports whether l is a kernel frame: the exporter gives those
// the mapping [kernel.kallsyms] (or another bracketed name other than
// [vdso]).
func isKernel(l *profile.Location) bool { return exporter.FrameKind(l) == symbolizer.KindKernel }

func TestRecordC(t *testing.T) {
	requireRoot(t)
	w := workload(t, "cpuburn-c")
	p, out, _ := record(t, "--duration", "5s", "--frequency", "499")
	checkSplit(t, p, w.Process.Pid, "hot_a", "hot_b", "main", "")

	// The mapping of the workload carries its build id and file.
	found := false
	for _, m := range p.Mapping {
		if strings.HasSuffix(m.File, "/cpuburn-c") {
			found = true
			if m.BuildID == "" || !m.HasFunctions {
				t.Errorf("mapping %+v: no build id or no functions", m)
			}
		}
	}
	if !found {
		t.Error("no mapping for the cpuburn-c binary")
	}

	// go tool pprof reads it.
	top, err := exec.Command("go", "tool", "pprof", "-top", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top: %v\n%s", err, top)
	}
	if !strings.Contains(string(top), "hot_a") {
		t.Errorf("go tool pprof -top does not show hot_a:\n%s", top)
	}
}

func TestRecordStrippedGo(t *testing.T) {
	requireRoot(t)
	w := workload(t, "cpuburn-go")
	p, _, _ := record(t, "--duration", "5s", "--frequency", "499", "--pid", fmt.Sprint(w.Process.Pid))
	checkSplit(t, p, w.Process.Pid, "main.hotA", "main.hotB", "main.main", "runtime.")
}

// TestRecordKernelFrames profiles a loop of write(2) and getppid(2): the
// samples taken in the kernel carry the kernel's frames above the user
// frames, down to main, and name the kernel's system call path.
//
// Which kernel functions a sample lands in depends on the kernel and the
// machine: on a paravirtualised guest the timer interrupt that samples
// waits while the entry code runs with interrupts off, and fires where
// do_syscall_64 turns them back on (do_syscall_64 -> pvm_irq_enable),
// rarely in __x64_sys_write itself; or, when the system call returns, on
// the user instruction after it (a user-only sample: about 40% here). So
// the test asks for a syscall entry point this kernel really has, by the
// names /proc/kallsyms lists, and for kernel frames in a good share of the
// samples rather than most.
func TestRecordKernelFrames(t *testing.T) {
	requireRoot(t)
	entries := syscallEntryPoints(t)
	w := workload(t, "syscall-c")
	p, _, _ := record(t, "--duration", "3s", "--frequency", "499", "--pid", fmt.Sprint(w.Process.Pid))
	pid := w.Process.Pid
	var n, kernelSamples, ordered, entered, withCaller int64
	for _, s := range p.Sample {
		if len(s.NumLabel["pid"]) == 0 || s.NumLabel["pid"][0] != int64(pid) {
			continue
		}
		n += s.Value[0]
		// Frames from the leaf: kernel ones first, then user ones, never a
		// kernel frame below a user frame.
		seenUser, bad, kernel := false, false, false
		for _, l := range s.Location {
			if exporter.FrameKind(l) == symbolizer.KindKernel {
				kernel = true
				if seenUser {
					bad = true
				}
			} else {
				seenUser = true
			}
		}
		if !kernel {
			continue
		}
		kernelSamples += s.Value[0]
		if !bad && stackHas(s, is("main")) {
			ordered += s.Value[0]
		}
		if stackHas(s, func(fn string) bool { return entries[fn] }) {
			entered += s.Value[0]
		}
		// With frame pointers only, the caller of a frameless libc
		// leaf (write, syscall) is skipped; the table unwinder finds it.
		if stackHas(s, is("do_writes")) || stackHas(s, is("do_getppid")) {
			withCaller += s.Value[0]
		}
	}
	t.Logf("%d samples, %d with kernel frames: %d kernel-above-user down to main, %d through a syscall entry point, %d with do_writes/do_getppid", n, kernelSamples, ordered, entered, withCaller)
	if n < 100 {
		t.Fatalf("only %d samples of the workload: too few to judge", n)
	}
	// A loop of system calls spends most of its time in the kernel; even
	// with the user-only samples above, a quarter is far below what any
	// kernel gives (55-63% on the paravirtualised guest, busy or not) and
	// far above what a profiler that drops kernel stacks would show (0).
	if kernelSamples*4 < n {
		t.Errorf("only %d of %d samples of a system call loop have kernel frames, want a quarter at least", kernelSamples, n)
	}
	// The kernel part is one stack above the user part, down to main,
	// every time: the slack is for user stacks that could not be read.
	testenv.CheckShare(t, "kernel samples with kernel frames above user frames down to main", ordered, kernelSamples, 1, 0.02)
	// The rest of the kernel samples entered the kernel by an interrupt
	// taken in user mode (asm_sysvec_*), rare in a loop that is in the
	// kernel most of the time (1% here).
	testenv.CheckShare(t, "kernel samples through a system call entry point", entered, kernelSamples, 1, 0.1)
}

// syscallEntryPoints returns the functions of this kernel's system call
// path that a sample of write(2) or getppid(2) taken in the kernel passes
// through, by the names /proc/kallsyms lists: the entry code
// (entry_SYSCALL_64*), the dispatcher (do_syscall_64, x64_sys_call) and
// the system calls themselves (__x64_sys_write, ksys_write, ...). Which
// exist, and which are inlined away, depends on the kernel version.
func syscallEntryPoints(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entry := regexp.MustCompile(`^(entry_SYSCALL_64\w*|do_syscall_64|x64_sys_call|__x64_sys_(write|getppid)|__do_sys_(write|getppid)|__se_sys_(write|getppid)|ksys_write)$`)
	found := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address type name [module]
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && entry.MatchString(fields[2]) {
			found[fields[2]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(found) == 0 {
		t.Fatal("/proc/kallsyms names none of the system call entry points (entry_SYSCALL_64, do_syscall_64, __x64_sys_write, ...)")
	}
	t.Logf("system call entry points in /proc/kallsyms: %v", slices.Sorted(maps.Keys(found)))
	return found
}

func TestRecordUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"record", "--frequency", "0"},
		{"record", "--no-such-flag"},
		{"record", "--duration", "-1s"},
		{"record", "--pid", "abc"},
		{"record", "--demangle", "weird"},
		{"record", "extra"},
		{"nonsense"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2; stderr %s", args, code, stderr.String())
		}
		if strings.Contains(stderr.String(), "goroutine ") {
			t.Errorf("%v printed a stack trace", args)
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"record", "--pid", "999999999"}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "no such process") {
		t.Errorf("missing pid: exit %d, %s", code, stderr.String())
	}
}

// TestRecordInterrupt runs the real binary and ends it with SIGINT: the
// file is still written.
func TestRecordInterrupt(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "scorch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "i.pb.gz")
	cmd := exec.Command(bin, "record", "--duration", "1h", "-o", out)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt a second after sampling started (loading takes longer on
	// a busy host).
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "scorch: sampling"); {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("record did not start sampling:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("record did not stop on SIGINT")
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatalf("no profile after SIGINT: %v\n%s", err, stderr.String())
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sample) == 0 {
		t.Error("no samples")
	}
}

// TestRecordNotPrivileged runs the binary without capabilities: a clear
// message, exit 1, no stack trace.
func TestRecordNotPrivileged(t *testing.T) {
	requireRoot(t)
	testenv.RequireTool(t, "setpriv")
	dir := t.TempDir()
	bin := filepath.Join(dir, "scorch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	os.Chmod(dir, 0o755)
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", bin, "record", "--duration", "1s", "-o", filepath.Join(os.TempDir(), "never.pb.gz"))
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1:\n%s", err, out)
	}
	if !strings.Contains(string(out), "not running as root") || !strings.Contains(string(out), "CAP_BPF") || strings.Contains(string(out), "goroutine ") {
		t.Errorf("unclear message:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer a child process writes to while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRecordExec profiles a process that burns CPU as a shell, then execs
// cpuburn-go in the same pid: the samples after the exec are named from
// the new program (its mappings are read again after the exec), none are
// left unnamed.
func TestRecordExec(t *testing.T) {
	requireRoot(t)
	// 0.3 s of shell CPU before the exec, so that both sides of it are
	// sampled however busy the host is.
	pid := execOnceSampling(t, testenv.Workload(t, "cpuburn-go"), "3", 300*time.Millisecond)
	p, _, _ := record(t, "--duration", "8s", "--frequency", "499", "--pid", fmt.Sprint(pid))
	// Named from the new program: every user frame has a name and the
	// stack holds Go code (the shell has none). The Go runtime's own
	// threads (sysmon, the scheduler) are part of the new program too.
	fromGo := func(names []string) bool {
		goCode := false
		for _, n := range names {
			if strings.HasPrefix(n, "0x") || strings.HasPrefix(n, "[") {
				return false
			}
			goCode = goCode || strings.HasPrefix(n, "main.") || strings.HasPrefix(n, "runtime.")
		}
		return goCode
	}
	var shell, burner, named, hot int64
	for s, names := range userStacks(p, pid) {
		switch s.Label["comm"][0] {
		case "cpuburn-go":
			burner += s.Value[0]
			if fromGo(names) {
				named += s.Value[0]
			}
			if slices.Contains(names, "main.hotA") || slices.Contains(names, "main.hotB") {
				hot += s.Value[0]
			}
		default:
			shell += s.Value[0]
		}
	}
	t.Logf("pid %d: %d samples as the shell, %d after the exec, %d of them named from the new program, %d in main.hotA/main.hotB", pid, shell, burner, named, hot)
	if shell == 0 || burner < 200 {
		t.Fatalf("want samples before and after the exec: %d and %d", shell, burner)
	}
	if float64(named) < 0.95*float64(burner) {
		t.Errorf("only %d of %d samples after the exec are named from the new program", named, burner)
	}
	if float64(hot) < 0.75*float64(burner) {
		t.Errorf("only %d of %d samples after the exec are in the program's hot functions", hot, burner)
	}
}

// execOnceSampling starts a shell that spins until this process's record
// has started sampling and, after that, has had shellCPU of CPU, then
// execs bin arg in the same pid, which it returns.
func execOnceSampling(t *testing.T, bin, arg string, shellCPU time.Duration) int {
	t.Helper()
	flag := filepath.Join(t.TempDir(), "go")
	cmd := exec.Command("/bin/sh", "-c", `while [ ! -e "$1" ]; do :; done; exec "$0" "$2"`, bin, flag, arg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	go func() {
		defer os.WriteFile(flag, nil, 0o644)
		deadline := time.Now().Add(60 * time.Second)
		for !sampling() {
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		start, _ := testenv.CPUTime(pid)
		for now, err := testenv.CPUTime(pid); err == nil && now-start < shellCPU && time.Now().Before(deadline); now, err = testenv.CPUTime(pid) {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return pid
}

// sampling reports whether this process holds a perf event, which the
// in-process record opens once it starts sampling.
func sampling() bool {
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if l, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && l == "anon_inode:[perf_event]" {
			return true
		}
	}
	return false
}

// TestRecordStartedAfter is the regression test of the "[truncated] for
// life" bug (issue 14): a program built with gcc's defaults (no frame
// pointers, a frameless leaf, no call into libc in its hot loop) started
// after sampling began must unwind to _start, not stop at libc's
// __libc_start_call_main for the whole run. The shell that execs it spins
// until sampling has started, so the program is new to the profiler.
func TestRecordStartedAfter(t *testing.T) {
	requireRoot(t)
	pid := execOnceSampling(t, testenv.Workload(t, "field-c"), "4", 0)
	p, _, _ := record(t, "--duration", "6s", "--frequency", "499", "--pid", fmt.Sprint(pid))
	var n, whole int64
	var bad []string
	for s, names := range userStacks(p, pid) {
		if s.Label["comm"][0] != "field-c" || !slices.Contains(names, "hot_inner") {
			continue
		}
		n += s.Value[0]
		if names[len(names)-1] == "_start" && slices.Contains(names, "main") {
			whole += s.Value[0]
		} else if len(bad) < 5 {
			bad = append(bad, strings.Join(names, " <- "))
		}
	}
	t.Logf("pid %d: %d samples in hot_inner after the exec, %d reach _start through main", pid, n, whole)
	if n < 500 {
		t.Fatalf("only %d samples of the program in its hot loop", n)
	}
	if float64(whole) < 0.99*float64(n) {
		t.Errorf("%d of %d stacks (%.2f%%) reach _start, want >= 99%%; others:\n%s", whole, n, 100*float64(whole)/float64(n), strings.Join(bad, "\n"))
	}
}
