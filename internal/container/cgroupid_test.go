package container

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

func cgroup2Mount(t *testing.T) string {
	t.Helper()
	mnt, err := Cgroup2Mount("/proc")
	if err != nil {
		t.Skipf("no cgroup2 file system mounted: %v", err)
	}
	return mnt
}

// TestCgroupIDRoot checks the id of the root cgroup, which the kernel
// fixes at 1, and that a non-cgroup path is refused.
func TestCgroupIDRoot(t *testing.T) {
	mnt := cgroup2Mount(t)
	id, err := CgroupID(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if id != 1 {
		t.Errorf("CgroupID(%s) = %d, want 1 (the root cgroup)", mnt, id)
	}
	if _, err := CgroupID(t.TempDir()); err == nil {
		t.Error("CgroupID of a tmp directory succeeded")
	}
	if _, err := CgroupID(filepath.Join(mnt, "cgroup.procs")); err == nil {
		t.Error("CgroupID of a cgroup file succeeded")
	}
}

// TestCgroupIDMatchesBPF moves a busy child process into a new cgroup,
// samples it with a perf-event BPF program that records
// bpf_get_current_cgroup_id, and compares with CgroupID of the directory.
func TestCgroupIDMatchesBPF(t *testing.T) {
	testenv.RequireRoot(t) // creates a cgroup and loads BPF
	mnt := cgroup2Mount(t)
	dir := filepath.Join(mnt, "scorch-cgroupid-test-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup under %s: %v", mnt, err)
	}
	want, err := CgroupID(dir)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		// The cgroup can be removed once it has no processes.
		for i := 0; i < 50 && os.Remove(dir) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatalf("moving pid %d into %s: %v", pid, dir, err)
	}

	// Lookup must now see the new cgroup as the process's v2 path.
	info, err := Lookup("/proc", uint32(pid))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := CgroupID(filepath.Join(mnt, info.Path)); err != nil || got != want {
		t.Errorf("CgroupID(mount + Lookup.Path %q) = %d, %v; want %d", info.Path, got, err, want)
	}

	got, err := bpfCgroupID(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("bpf_get_current_cgroup_id = %d, CgroupID(%s) = %d", got, dir, want)
	}
}

// bpfCgroupID samples pid with a cpu-clock perf event whose BPF program
// stores bpf_get_current_cgroup_id into an array map.
func bpfCgroupID(pid int) (uint64, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.PerfEvent,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.FnGetCurrentCgroupId.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, -16, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -16),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		return 0, err
	}
	defer prog.Close()
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(binary.Size(unix.PerfEventAttr{})),
		Sample: 1_000_000, // period in ns: 1 ms
		Bits:   unix.PerfBitDisabled,
	}
	fd, err := unix.PerfEventOpen(&attr, pid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, prog.FD()); err != nil {
		return 0, err
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var v uint64
		if err := m.Lookup(uint32(0), &v); err != nil {
			return 0, err
		}
		if v != 0 {
			return v, nil
		}
	}
	return 0, errors.New("no sample of the busy child within 10s")
}

func TestParseCgroup2Mount(t *testing.T) {
	const mi = `22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
39 30 0:35 / /sys/fs/cgroup/my\040cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw
40 30 0:36 / /sys/fs/cgroup/other rw - cgroup2 cgroup2 rw
`
	got, ok := parseCgroup2Mount(mi)
	if !ok || got != "/sys/fs/cgroup/my cgroup" {
		t.Errorf("parseCgroup2Mount = %q, %v; want %q", got, ok, "/sys/fs/cgroup/my cgroup")
	}
	if _, ok := parseCgroup2Mount("30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"); ok {
		t.Error("found a cgroup2 mount among v1 mounts")
	}
	for _, bad := range []string{"", " - cgroup2", "a b - cgroup2 x y", `1 2 3 4 \7 - cgroup2`} {
		parseCgroup2Mount(bad) // must not panic
	}
}
