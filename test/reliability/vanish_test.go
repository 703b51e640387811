package reliability

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// install copies the binary src to dst the way a deploy does: write a new
// file and rename it over dst, so that processes running the old dst keep
// a deleted inode.
func install(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, path string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// names counts the samples of process pid (by value) that hold a function
// for which match says yes.
func names(ws []pushed, pid int, match func(string) bool) (hit, all int64) {
	for _, w := range forPid(ws, pid) {
		h, a := frameShareFunc(w.prof, match)
		hit += h
		all += a
	}
	return hit, all
}

func frameShareFunc(p *profile.Profile, match func(string) bool) (hit, all int64) {
	for _, s := range p.Sample {
		all += s.Value[0]
	loc:
		for _, l := range s.Location {
			for _, ln := range l.Line {
				if ln.Function != nil && match(ln.Function.Name) {
					hit += s.Value[0]
					break loc
				}
			}
		}
	}
	return hit, all
}

func isBurn(fn string) bool { return fn == "hot_a" || fn == "hot_b" }
func isSymtest(fn string) bool {
	return strings.HasPrefix(fn, "gfn_") || strings.HasPrefix(fn, "sfn_") || fn == "round_all"
}

// TestVanishingBinaries replaces the binary of running processes with a
// different program at the same path (as a deploy does) and checks that
// every process is named from the file it runs, never from the new one:
//   - old: deleted before the agent started, so the agent can only open it
//     through /proc/PID/map_files;
//   - mid: observed by the agent, then deleted and replaced while it runs;
//   - new: started from the replacement.
func TestVanishingBinaries(t *testing.T) {
	requireRoot(t)
	burner, symtest := workload(t, "cpuburn-c"), workload(t, "symtest-c")
	app := filepath.Join(t.TempDir(), "app")

	install(t, burner, app)
	old := run(t, app, "30")
	time.Sleep(100 * time.Millisecond) // exec done
	install(t, symtest, app)           // old now runs a deleted file
	if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", old.Process.Pid)); !strings.HasSuffix(l, "(deleted)") {
		t.Fatalf("exe of the old process is %q, want a deleted file", l)
	}

	rcv := newReceiver()
	srv := startReceiver(t, rcv)
	a := startAgent(t, "--interval", "2s", "--frequency", "99", "--data-dir", "", "--pyroscope-url", srv.URL)
	mid := run(t, app, "30") // symtest-c
	time.Sleep(3 * time.Second)
	install(t, burner, app) // mid now runs a deleted file
	newer := run(t, app, "30")
	time.Sleep(5 * time.Second)
	if err := a.stop(); err != nil {
		t.Fatalf("stop: %v\n%s", err, a.logs)
	}
	ws := rcv.windows(nil)

	check := func(name string, pid int, right, wrong func(string) bool) {
		hit, all := names(ws, pid, right)
		bad, _ := names(ws, pid, wrong)
		t.Logf("%s (pid %d): %d samples, %d named from its own file, %d from the other", name, pid, all, hit, bad)
		if all < 50 {
			t.Errorf("%s: only %d samples", name, all)
			return
		}
		if float64(hit) < 0.9*float64(all) {
			t.Errorf("%s: %d of %d samples named from its own file, want >= 90%%", name, hit, all)
		}
		if bad != 0 {
			t.Errorf("%s: %d samples named from the file that replaced it", name, bad)
		}
	}
	check("old (deleted before the agent started)", old.Process.Pid, isBurn, isSymtest)
	check("mid (replaced while observed)", mid.Process.Pid, isSymtest, isBurn)
	check("new (the replacement)", newer.Process.Pid, isBurn, isSymtest)
}
