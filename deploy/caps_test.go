package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// capcheckResults runs internal/capcheck as root restricted to caps (via
// setpriv: bounding, inheritable and ambient sets), against a process of
// another user whose binary only that user can read, and returns each
// check's outcome ("ok" or the failure).
func capcheckResults(t *testing.T, capcheck string, pid int, exe string, caps []string) map[string]string {
	t.Helper()
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	cmd := exec.Command("setpriv", "--inh-caps="+set, "--ambient-caps="+set, "--bounding-set="+set,
		"--", capcheck, "-pid", strconv.Itoa(pid), "-exe", exe)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	res := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, outcome, _ := strings.Cut(line, " ")
		res[name] = outcome
	}
	return res
}

// TestMinimalCapabilities checks that minimalCaps, the set the manifests
// grant, lets the agent do everything it needs, and that each capability
// in it is needed for some operation (it is minimal).
func TestMinimalCapabilities(t *testing.T) {
	testenv.RequireRoot(t) // runs a target as another user and the checker with chosen capabilities
	testenv.RequireTool(t, "setpriv")
	dir := t.TempDir()
	capcheck := filepath.Join(dir, "capcheck")
	if out, err := exec.Command("go", "build", "-o", capcheck, "./internal/capcheck").CombinedOutput(); err != nil {
		t.Fatalf("building capcheck: %v\n%s", err, out)
	}

	// The target: a copy of sleep owned by uid 1234 in a directory only
	// that user can enter, run as that user.
	const uid = 1234
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(dir, "secret")
	exe := filepath.Join(secret, "sleep")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{secret, exe} {
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	target := exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(uid), "--clear-groups", exe, "300")
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	// setpriv execs the target in place: wait until the pid runs it.
	for i := 0; ; i++ {
		if l, _ := os.Readlink("/proc/" + strconv.Itoa(target.Process.Pid) + "/exe"); l == exe {
			break
		}
		if i == 100 {
			t.Fatal("target did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid := target.Process.Pid

	full := capcheckResults(t, capcheck, pid, exe, minimalCaps)
	if len(full) < 10 {
		t.Fatalf("capcheck reported only %d checks: %v", len(full), full)
	}
	for name, outcome := range full {
		if outcome != "ok" {
			t.Errorf("with %v: %s %s", minimalCaps, name, outcome)
		}
	}

	for _, drop := range minimalCaps {
		var caps []string
		for _, c := range minimalCaps {
			if c != drop {
				caps = append(caps, c)
			}
		}
		res := capcheckResults(t, capcheck, pid, exe, caps)
		var failed []string
		for name, outcome := range res {
			if outcome != "ok" {
				failed = append(failed, name)
			}
		}
		slices.Sort(failed)
		if len(failed) == 0 {
			t.Errorf("CAP_%s is not needed: every check passes without it", drop)
		}
		t.Logf("without CAP_%s: %v fail", drop, failed)
	}
}
