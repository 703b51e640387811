package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// These tests run the binary `make build` produces, as a user would: the
// CLI's messages, exit codes and files, and the build itself (static, so
// that the agent can drop its privileges).

// cliVersion is the version the test build is stamped with.
const cliVersion = "v0.0.0-clitest"

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// builtScorch builds bin/scorch once per test binary with `make build`
// (BIN pointing into a temporary directory) and returns its path.
func builtScorch(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scorch-cli-test-")
		if err != nil {
			cliErr = err
			return
		}
		cliBin = filepath.Join(dir, "scorch")
		out, err := exec.Command("make", "-C", filepath.Join("..", ".."), "build", "BIN="+cliBin, "VERSION="+cliVersion).CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("make build: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cliBin != "" {
		os.RemoveAll(filepath.Dir(cliBin))
	}
	os.Exit(code)
}

type cliResult struct {
	code, pid      int
	stdout, stderr string
	took           time.Duration
}

// scorch runs the built binary with args and env (added to the test's
// environment) and a bound on its time.
func scorch(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, builtScorch(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := cliResult{pid: cmd.Process.Pid, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("scorch %v: %v", args, err)
	}
	return r
}

// TestCLIHelp: --help prints the usage once on stdout, exit 0.
func TestCLIHelp(t *testing.T) {
	for _, cmd := range []string{"record", "agent", "view", "version"} {
		r := scorch(t, nil, cmd, "--help")
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", cmd, r.code, r.stderr)
		}
		if n := strings.Count(r.stdout, "Usage: scorch "+cmd); n != 1 {
			t.Errorf("%s --help: usage printed %d times:\n%s", cmd, n, r.stdout)
		}
	}
	r := scorch(t, nil, "agent", "--help")
	for _, want := range []string{"--allow-no-output", "--interval duration", "--pyroscope-basic-auth-password-file string", "(default 15s)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("agent --help lacks %q", want)
		}
	}
}

// TestCLIParseErrors: an error in how scorch is called is one line naming
// the value and the form wanted, then a one-line hint, on stderr; nothing
// on stdout; exit 2. Flags, environment variables and config-file keys alike.
func TestCLIParseErrors(t *testing.T) {
	config := filepath.Join(t.TempDir(), "scorch.yaml")
	if err := os.WriteFile(config, []byte("interval: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want []string // in the error line
	}{
		{nil, []string{"record", "--no-such-flag"}, []string{"-no-such-flag"}},
		{nil, []string{"record", "--duration", "bogus"}, []string{`"bogus"`, "duration", "want a duration such as 15s"}},
		{nil, []string{"record", "--frequency", "fast"}, []string{`"fast"`, "frequency", "want a whole number"}},
		{nil, []string{"record", "--drop-idle=maybe"}, []string{`"maybe"`, "drop-idle", "want true or false"}},
		{nil, []string{"record", "--top", "-1"}, []string{"--top -1", "want 0"}},
		{nil, []string{"record", "--stack-map-size", "-5"}, []string{"--stack-map-size -5", "out of range"}},
		{[]string{"SCORCH_INTERVAL=bogus"}, []string{"agent"}, []string{`SCORCH_INTERVAL="bogus"`, "want a duration such as 15s"}},
		{[]string{"SCORCH_FREQUENCY=lots"}, []string{"agent"}, []string{`SCORCH_FREQUENCY="lots"`, "want a whole number"}},
		{nil, []string{"agent", "--config", config}, []string{config, `interval="soon"`, "want a duration such as 15s"}},
		{nil, []string{"agent", "--retention", "-1h"}, []string{"--retention -1h0m0s", "want a positive duration"}},
		{nil, []string{"agent", "--pyroscope-timeout", "0s"}, []string{"--pyroscope-timeout 0s", "want a positive duration"}},
	} {
		r := scorch(t, tc.env, tc.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 2 || r.stdout != "" || len(lines) != 2 {
			t.Errorf("%v %v: exit %d (want 2), stdout %q (want none), stderr of %d lines (want 2):\n%s", tc.env, tc.args, r.code, r.stdout, len(lines), r.stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(lines[0], w) {
				t.Errorf("%v %v: error %q does not say %q", tc.env, tc.args, lines[0], w)
			}
		}
		if hint := fmt.Sprintf("Run 'scorch %s --help' for usage.", tc.args[0]); lines[1] != hint {
			t.Errorf("%v %v: hint %q, want %q", tc.env, tc.args, lines[1], hint)
		}
	}
	r := scorch(t, nil, "nonsense")
	if r.code != 2 || r.stdout != "" || strings.Count(r.stderr, "\n") != 2 || !strings.Contains(r.stderr, `unknown command "nonsense"`) {
		t.Errorf("unknown command: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestCLIOutputChecked: an --output that cannot be written is refused
// before anything is recorded (no root needed: nothing is loaded).
func TestCLIOutputChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ out, why string }{
		{"/nonexistent/dir/x.pb.gz", "no such file or directory"},
		{dir, "is a directory"},
		{"/proc/x.pb.gz", "cannot create files in /proc"},
		{filepath.Join(dir, "file", "x.pb.gz"), "not a directory"},
	} {
		if tc.why == "not a directory" {
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
		}
		r := scorch(t, nil, "record", "--duration", "1h", "-o", tc.out)
		if r.code != 1 || !strings.Contains(r.stderr, "--output "+tc.out) || !strings.Contains(r.stderr, tc.why) {
			t.Errorf("-o %s: exit %d (want 1), stderr %q (want --output %s ... %s)", tc.out, r.code, r.stderr, tc.out, tc.why)
		}
		if strings.Contains(r.stderr, "sampling") {
			t.Errorf("-o %s: recording started:\n%s", tc.out, r.stderr)
		}
		// Starting a process on a busy host takes a while; recording
		// would take the hour.
		if r.took > 5*time.Second {
			t.Errorf("-o %s: refused after %s", tc.out, r.took)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the check left files behind in %s: %v", dir, entries)
	}
}

// TestCLIVersion: `scorch version` and `scorch --version` print the version
// the build set, then the build information in `go version -m` form.
func TestCLIVersion(t *testing.T) {
	a := scorch(t, nil, "version")
	b := scorch(t, nil, "--version")
	if a.code != 0 || b.code != 0 || a.stdout != b.stdout {
		t.Fatalf("version: exit %d, --version: exit %d; outputs differ:\n%s\n---\n%s", a.code, b.code, a.stdout, b.stdout)
	}
	for _, want := range []string{
		"scorch " + cliVersion + "\n",
		"\ngo\tgo1.",
		"\npath\tgithub.com/scorch-profiler/scorch/cmd/scorch\n",
		"\nmod\tgithub.com/scorch-profiler/scorch\t",
		"\ndep\tgithub.com/cilium/ebpf\t",
		"\nbuild\tCGO_ENABLED=0\n",
	} {
		if !strings.Contains(a.stdout, want) {
			t.Errorf("version lacks %q:\n%s", want, a.stdout)
		}
	}
}

// TestBuildVersion: without -X main.version, the module version or the
// VCS revision Go stamped names the build.
func TestBuildVersion(t *testing.T) {
	defer func(v string) { version = v }(version)
	version = ""
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs}, "devel 0123456789ab-dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel"},
	} {
		if got := buildVersion(&tc.bi, true); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.bi.Main, got, tc.want)
		}
	}
	version = "v9"
	if got := buildVersion(nil, false); got != "v9" {
		t.Errorf("-X version: %q", got)
	}
}

// TestCLISecretHints: a password in the config file or on the command
// line is refused with the flag of the file that holds it.
func TestCLISecretHints(t *testing.T) {
	config := filepath.Join(t.TempDir(), "scorch.yaml")
	os.WriteFile(config, []byte("pyroscope-url: https://example.invalid\npyroscope-basic-auth-password: hunter2\n"), 0o600)
	for _, args := range [][]string{
		{"agent", "--config", config},
		{"agent", "--pyroscope-basic-auth-password=hunter2"},
	} {
		r := scorch(t, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "pyroscope-basic-auth-password-file") || !strings.Contains(r.stderr, "SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("%v: the secret was echoed: %q", args, r.stderr)
		}
	}
}

// TestCLINoOutput: an agent that would keep nothing is refused, naming
// the three ways to keep something and the flag that overrides.
func TestCLINoOutput(t *testing.T) {
	r := scorch(t, nil, "agent", "--data-dir", "", "--listen", "")
	if r.code != 2 {
		t.Errorf("exit %d, want 2:\n%s", r.code, r.stderr)
	}
	for _, w := range []string{"keep nothing", "--data-dir", "--listen", "--pyroscope-url", "--allow-no-output"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("refusal does not name %s: %q", w, r.stderr)
		}
	}
}

// TestCLIStaticAgent: the binary of `make build` is static, and the agent
// it runs drops its capabilities (the cgo build could not, and said
// "capabilities kept" at every start). --allow-no-output lets it run with
// no output at all.
func TestCLIStaticAgent(t *testing.T) {
	bin := builtScorch(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not a static (CGO_ENABLED=0) build", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s links %v", bin, libs)
	}
	f.Close()

	requireRoot(t)
	cmd := exec.Command(bin, "agent", "--data-dir", "", "--listen", "", "--allow-no-output", "--log-level", "debug")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(stderr.String(), "msg=profiling"); {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not start profiling:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent: %v\n%s", err, stderr.String())
	}
	log := stderr.String()
	if strings.Contains(log, "capabilities kept") || !strings.Contains(log, "capabilities dropped") {
		t.Errorf("the static agent did not drop its capabilities:\n%s", log)
	}
}

// recordBuilt runs the built `scorch record` with args and parses the
// profile it wrote.
func recordBuilt(t *testing.T, args ...string) (*profile.Profile, string, cliResult) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "p.pb.gz")
	r := scorch(t, nil, append([]string{"record", "-o", out, "--top", "0"}, args...)...)
	if r.code != 0 {
		t.Fatalf("record %v: exit %d\n%s", args, r.code, r.stderr)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return p, out, r
}

// TestCLIRecordMainMapping: a profile of --pid P names P's executable as
// its main (first) mapping, which `go tool pprof` shows as "File:"; a
// system-wide profile names the busiest process's.
func TestCLIRecordMainMapping(t *testing.T) {
	requireRoot(t)
	w := workload(t, "cpuburn-c")
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", w.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	p, out, _ := recordBuilt(t, "--pid", fmt.Sprint(w.Process.Pid), "--duration", "2s")
	if len(p.Mapping) == 0 || p.Mapping[0].File != exe || p.Mapping[0].ID != 1 {
		t.Fatalf("first mapping %+v, want %s", p.Mapping[0], exe)
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, top)
	}
	if want := "File: " + filepath.Base(exe) + "\n"; !strings.Contains(string(top), want) {
		t.Errorf("pprof header lacks %q:\n%s", want, top)
	}

	// System-wide: the process with the most samples, as counted in the
	// profile itself (on a shared host it need not be the workload).
	p, _, r := recordBuilt(t, "--duration", "2s", "--drop-idle")
	per := map[int64]int64{}
	for _, s := range p.Sample {
		if pid := s.NumLabel["pid"]; len(pid) == 1 && pid[0] != 0 {
			per[pid[0]] += s.Value[0]
		}
	}
	// Kernel threads have no executable: the busiest process that has one.
	for len(per) > 0 {
		var busiest int64
		for pid, n := range per {
			if busiest == 0 || n > per[busiest] || n == per[busiest] && pid < busiest {
				busiest = pid
			}
		}
		if busiest == int64(r.pid) { // scorch record itself
			if p.Mapping[0].File != builtScorch(t) {
				t.Errorf("system-wide: first mapping %s, want the busiest process's (scorch record, %d samples) %s", p.Mapping[0].File, per[busiest], builtScorch(t))
			}
			return
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", busiest)); err != nil {
			// Gone since: its executable cannot be read any more; the
			// symbolizer read it while the process lived.
			t.Logf("system-wide: the busiest process %d is gone; first mapping %s", busiest, p.Mapping[0].File)
			return
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", busiest))
		if err != nil {
			delete(per, busiest) // a kernel thread
			continue
		}
		if p.Mapping[0].File != exe {
			t.Errorf("system-wide: first mapping %s, want the busiest process's (pid %d, %d samples) %s", p.Mapping[0].File, busiest, per[busiest], exe)
		}
		return
	}
	t.Error("system-wide: no process with an executable in the profile")
}

// TestCLIStrippedNote: a stripped binary is a debug-level note, logged
// once for the file however many processes map it, and no warning.
func TestCLIStrippedNote(t *testing.T) {
	requireRoot(t)
	src := filepath.Join("..", "..", "testdata", "bin", "cpuburn-c")
	workload(t, "cpuburn-c").Process.Kill() // builds testdata if needed
	stripped := filepath.Join(t.TempDir(), "burn-stripped")
	if out, err := exec.Command("objcopy", "--strip-all", src, stripped).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	var pids []string
	for range 2 {
		cmd := exec.Command(stripped)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		pids = append(pids, fmt.Sprint(cmd.Process.Pid))
	}
	_, _, r := recordBuilt(t, "--pid", strings.Join(pids, ","), "--duration", "2s", "--log-level", "debug")
	var notes, warns int
	for _, line := range strings.Split(r.stderr, "\n") {
		if !strings.Contains(line, stripped) {
			continue
		}
		if strings.Contains(line, "level=DEBUG") && strings.Contains(line, "stripped") {
			notes++
		}
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			warns++
		}
	}
	if notes != 1 || warns != 0 {
		t.Errorf("%d debug notes (want 1) and %d warnings (want 0) for %s:\n%s", notes, warns, stripped, r.stderr)
	}
}

// TestMakefileFindsGo: make finds Go with a PATH that lacks it (sudo's
// secure_path), builds statically, and under sudo gives what it creates
// back to the user who ran sudo.
func TestMakefileFindsGo(t *testing.T) {
	root := filepath.Join("..", "..")
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + t.TempDir()}
	run := func(extra ...string) string {
		cmd := exec.Command("make", append([]string{"-n", "-C", root, "build", "run"}, extra...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run()
	var gobin string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == "CGO_ENABLED=0" && f[2] == "build" {
			gobin = f[1]
		}
	}
	if gobin == "" {
		t.Fatalf("make build does not run a static go build:\n%s", out)
	}
	if fi, err := os.Stat(gobin); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("make build runs %s, not an executable go: %v", gobin, err)
	}
	if strings.Contains(out, "chown") {
		t.Errorf("chown without sudo:\n%s", out)
	}
	env = append(env, "SUDO_UID=4242", "SUDO_GID=4343")
	out = run()
	for _, want := range []string{"chown -R 4242:4343 bin/scorch bin", "trap '' INT TERM", "chown -R 4242:4343 " + filepath.Join(absRoot(t), "scorch-data")} {
		if !strings.Contains(out, want) {
			t.Errorf("make -n build run under sudo lacks %q:\n%s", want, out)
		}
	}
}

func absRoot(t *testing.T) string {
	p, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
