package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/symbolizer"
)

// These tests run `scorch record` for real: the BPF program is loaded into
// the running kernel and profiles real workloads from testdata/.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("must run as root in CI: this test loads BPF programs")
		}
		t.Skip("needs root to load BPF programs")
	}
}

// workload builds (if needed) and starts testdata/bin/NAME with args.
func workload(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	bin := filepath.Join("..", "..", "testdata", "bin", name)
	if _, err := os.Stat(bin); err != nil {
		if out, err := exec.Command("make", "-C", filepath.Join("..", "..", "testdata")).CombinedOutput(); err != nil {
			t.Fatalf("build testdata: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	time.Sleep(200 * time.Millisecond) // let it reach its hot loop
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

// stackShare is, among the samples of pid, the fraction whose stack holds
// a function for which match is true.
func stackShare(p *profile.Profile, pid int, match func(string) bool) (share float64, n int64) {
	var hit int64
	for _, s := range p.Sample {
		if len(s.NumLabel["pid"]) == 0 || s.NumLabel["pid"][0] != int64(pid) {
			continue
		}
		n += s.Value[0]
		if stackHas(s, match) {
			hit += s.Value[0]
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(hit) / float64(n), n
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
// stacks reach main.
func checkSplit(t *testing.T, p *profile.Profile, pid int, hotA, hotB, main string) {
	t.Helper()
	a, n := stackShare(p, pid, is(hotA))
	b, _ := stackShare(p, pid, is(hotB))
	m, _ := stackShare(p, pid, is(main))
	t.Logf("pid %d: %d samples, %s %.1f%%, %s %.1f%%, %s in %.2f%% of stacks", pid, n, hotA, 100*a, hotB, 100*b, main, 100*m)
	if n < 500 {
		t.Fatalf("only %d samples of the workload", n)
	}
	if a < 0.72 || a > 0.78 {
		t.Errorf("%s has %.1f%% of the samples, want 75%% ± 3", hotA, 100*a)
	}
	if b < 0.22 || b > 0.28 {
		t.Errorf("%s has %.1f%% of the samples, want 25%% ± 3", hotB, 100*b)
	}
	if m < 0.99 {
		t.Errorf("%s is in %.2f%% of the stacks, want ≥ 99%%", main, 100*m)
	}
}

func TestRecordC(t *testing.T) {
	requireRoot(t)
	w := workload(t, "cpuburn-c")
	p, out, _ := record(t, "--duration", "5s", "--frequency", "499")
	checkSplit(t, p, w.Process.Pid, "hot_a", "hot_b", "main")

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
	checkSplit(t, p, w.Process.Pid, "main.hotA", "main.hotB", "main.main")
}

func TestRecordKernelFrames(t *testing.T) {
	requireRoot(t)
	w := workload(t, "syscall-c")
	p, _, _ := record(t, "--duration", "3s", "--frequency", "499", "--pid", fmt.Sprint(w.Process.Pid))
	pid := w.Process.Pid
	_, n := stackShare(p, pid, func(string) bool { return true })
	var kernelSamples, ordered, withCaller int64
	for _, s := range p.Sample {
		if s.NumLabel["pid"][0] != int64(pid) {
			continue
		}
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
		if kernel {
			kernelSamples += s.Value[0]
			if !bad && stackHas(s, is("main")) {
				ordered += s.Value[0]
			}
			// With frame pointers only, the caller of a frameless libc
			// leaf (write, syscall) is skipped; the table unwinder finds it.
			if stackHas(s, is("do_writes")) || stackHas(s, is("do_getppid")) {
				withCaller += s.Value[0]
			}
		}
	}
	t.Logf("%d samples, %d with kernel frames, %d of those kernel-above-user down to main, %d with do_writes/do_getppid", n, kernelSamples, ordered, withCaller)
	if kernelSamples*2 < n {
		t.Errorf("only %d of %d samples of a syscall loop have kernel frames", kernelSamples, n)
	}
	if ordered*100 < kernelSamples*95 {
		t.Errorf("only %d of %d kernel samples have kernel frames above user frames down to main", ordered, kernelSamples)
	}
	sys, _ := stackShare(p, pid, func(s string) bool { return strings.Contains(s, "sys_write") || strings.Contains(s, "sys_getppid") })
	if sys < 0.3 {
		t.Errorf("syscall entry points in only %.1f%% of samples", 100*sys)
	}
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
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
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
	bin, err := filepath.Abs(filepath.Join("..", "..", "testdata", "bin", "cpuburn-go"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("testdata not built: %v", err)
	}
	// The shell spins until the flag file exists, then execs the burner.
	// The flag is made once sampling has started and the shell has had
	// 0.3 s of CPU under it, so that both sides of the exec are sampled
	// however busy the host is.
	flag := filepath.Join(t.TempDir(), "go")
	cmd := exec.Command("/bin/sh", "-c", `while [ ! -e "$1" ]; do :; done; exec "$0" 3`, bin, flag)
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
		start := cpuTime(pid)
		for cpuTime(pid)-start < 300*time.Millisecond && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	p, _, _ := record(t, "--duration", "8s", "--frequency", "499", "--pid", fmt.Sprint(pid))
	var shell, burner, named int64
	for s, names := range userStacks(p, pid) {
		switch s.Label["comm"][0] {
		case "cpuburn-go":
			burner += s.Value[0]
			if slices.Contains(names, "main.hotA") || slices.Contains(names, "main.hotB") {
				named += s.Value[0]
			}
		default:
			shell += s.Value[0]
		}
	}
	t.Logf("pid %d: %d samples as the shell, %d after the exec, %d of them in main.hotA/main.hotB", pid, shell, burner, named)
	if shell == 0 || burner < 200 {
		t.Fatalf("want samples before and after the exec: %d and %d", shell, burner)
	}
	if float64(named) < 0.95*float64(burner) {
		t.Errorf("only %d of %d samples after the exec are named from the new program", named, burner)
	}
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

// cpuTime is the user plus system CPU time pid has used so far (0 once it
// is gone).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the comm, which may hold spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * time.Second / 100 // USER_HZ is 100 on Linux
}
