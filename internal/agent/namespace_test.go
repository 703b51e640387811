package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/container"
	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// startHidden starts testdata's cpuburn-c as NAME in a mount and PID
// namespace of its own (unshare --mount --pid --fork --mount-proc), from a
// tmpfs mounted only in that mount namespace: the host cannot open the
// binary by its path, as with a container's image. It returns the
// process's pid in the host's (initial) PID namespace; inside its own it
// is pid 1.
func startHidden(t *testing.T, name string) int {
	t.Helper()
	testenv.RequireTool(t, "unshare")
	src := testenv.Workload(t, "cpuburn-c")
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
		"sh", "-c", `mount -t tmpfs scorch-test "$1" && cp "$2" "$1/$3" && exec "$1/$3"`, "sh", dir, src, name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The namespace's pid 1 is unshare's only child; wait until it runs
	// the binary from the tmpfs.
	u := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start in its namespaces; unshare said: %s", name, stderr.String())
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", u, u))
		f := strings.Fields(string(b))
		if len(f) != 1 {
			continue
		}
		pid, _ := strconv.Atoi(f[0])
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != filepath.Join(dir, name) {
			continue
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the host sees the hidden binary (%v): the test would prove nothing", err)
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "\nNSpid:\t"+f[0]+"\t1\n") {
			t.Fatalf("pid %d is not pid 1 of a namespace of its own:\n%s", pid, status)
		}
		return pid
	}
}

// dockerCgroup creates a cgroup named like one of docker's
// (.../docker-<id>.scope) and moves pid into it.
func dockerCgroup(t *testing.T, pid int) string {
	t.Helper()
	mnt, err := container.Cgroup2Mount("/proc")
	if err != nil {
		t.Fatalf("this test needs a cgroup2 mount: %v", err)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("scorch-test-%d-%d", os.Getpid(), pid)))
	id := hex.EncodeToString(sum[:])
	parent := filepath.Join(mnt, fmt.Sprintf("scorch-ns-test-%d", os.Getpid()))
	dir := filepath.Join(parent, "docker-"+id+".scope")
	for _, d := range []string{parent, dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeCgroup(t, mnt, d) })
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAgentNamespacedProcess profiles processes that run in PID and mount
// namespaces of their own from a binary the host cannot see by its path:
// the agent names their functions (reading the binary through /proc) and
// labels them with their pid in the host's namespace and, for one in a
// docker-like cgroup, with its container id.
func TestAgentNamespacedProcess(t *testing.T) {
	requireRoot(t)
	plainName := fmt.Sprintf("burn-ns-%d", os.Getpid())
	plain := startHidden(t, plainName)
	boxed := startHidden(t, "burn-ns-docker")
	cid := dockerCgroup(t, boxed)

	dir := t.TempDir()
	cfg := testConfig(t, "--interval", "2s", "--frequency", "199", "--data-dir", dir, "--listen", "",
		"--include", fmt.Sprintf("pid:%d", plain), "--include", fmt.Sprintf("pid:%d", boxed))
	stop := runAgent(t, cfg)
	time.Sleep(6 * time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		pid          int
		service, cid string
	}{
		{pid: plain, service: plainName},
		{pid: boxed, service: "container-" + cid[:12], cid: cid},
	} {
		var n, hot, hotB int64
		for _, w := range ws {
			p, err := st.Open(context.Background(), w.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range p.Sample {
				if !samplePid(s, tc.pid) {
					continue
				}
				if w.Labels["service_name"] != tc.service || w.Labels["container_id"] != tc.cid {
					t.Errorf("pid %d: labels %v, want service_name %q, container_id %q", tc.pid, w.Labels, tc.service, tc.cid)
				}
				n += s.Value[0]
				if stackHas(s, "hot_a") {
					hot += s.Value[0]
				}
				if stackHas(s, "hot_b") {
					hotB += s.Value[0]
				}
			}
		}
		t.Logf("pid %d (%s): %d samples, hot_a %d, hot_b %d", tc.pid, tc.service, n, hot, hotB)
		// On a machine shared with other work, the workload may get much
		// less than a CPU: ask for enough samples to judge the names only.
		if n < 30 {
			t.Errorf("pid %d: only %d samples in the stored windows", tc.pid, n)
			continue
		}
		// cpuburn-c spends 3/4 of its time in hot_a and 1/4 in hot_b:
		// if the binary could not be read, neither is named.
		if hot+hotB < n*9/10 || hot < n/2 || hotB < n/10 {
			t.Errorf("pid %d: hot_a in %d and hot_b in %d of %d samples: the hidden binary was not symbolized", tc.pid, hot, hotB, n)
		}
	}
}

// samplePid says whether s is a sample of process pid (its pid label: the
// pid is a sample label, not a target's).
func samplePid(s *profile.Sample, pid int) bool {
	return len(s.NumLabel["pid"]) == 1 && s.NumLabel["pid"][0] == int64(pid)
}

// stackHas says whether function fn is on the stack of s.
func stackHas(s *profile.Sample, fn string) bool {
	for _, l := range s.Location {
		for _, ln := range l.Line {
			if ln.Function != nil && ln.Function.Name == fn {
				return true
			}
		}
	}
	return false
}
