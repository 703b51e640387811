// Command capcheck tries, one by one, the privileged operations the Scorch
// agent performs, and prints one line per operation: its name, then "ok"
// or "FAIL: <error>". deploy/caps_test.go runs it under different
// capability sets (with setpriv) to find the minimal set the deployment
// manifests grant.
//
// Usage: capcheck -pid PID -exe PATH
//
// PID should be a process of another user and PATH a binary of that user
// that only its owner can read, so that the checks exercise permission
// checks rather than ownership.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func main() {
	pid := flag.Int("pid", 0, "pid of a process of another user")
	exe := flag.String("exe", "", "path of a binary only its owner can read")
	flag.Parse()
	if *pid == 0 || *exe == "" {
		fmt.Fprintln(os.Stderr, "usage: capcheck -pid PID -exe PATH")
		os.Exit(2)
	}
	proc := "/proc/" + strconv.Itoa(*pid)

	check("bpf_map_create", func() error {
		m, err := newMap()
		if err == nil {
			m.Close()
		}
		return err
	})
	check("bpf_prog_load_perf_event", func() error {
		m, err := newMap()
		if err != nil {
			return err
		}
		defer m.Close()
		p, err := newProg(m)
		if err == nil {
			p.Close()
		}
		return err
	})
	check("perf_event_open_cpu_wide", func() error { return perfAttach(-1, 0) })
	check("perf_event_open_other_user_pid", func() error { return perfAttach(*pid, -1) })
	check("read_proc_pid_maps", func() error {
		b, err := os.ReadFile(proc + "/maps")
		if err == nil && len(b) == 0 {
			return errors.New("empty")
		}
		return err
	})
	check("read_proc_pid_environ", func() error { _, err := os.ReadFile(proc + "/environ"); return err })
	check("readlink_proc_pid_exe", func() error { _, err := os.Readlink(proc + "/exe"); return err })
	check("open_proc_pid_exe", func() error { return readELF(proc + "/exe") })
	check("open_binary_by_path", func() error { return readELF(*exe) })
	check("open_binary_via_proc_pid_root", func() error { return readELF(proc + "/root" + *exe) })
	check("readlink_proc_pid_map_files", func() error {
		r, err := firstRange(proc)
		if err != nil {
			return err
		}
		_, err = os.Readlink(proc + "/map_files/" + r)
		return err
	})
	check("open_proc_pid_map_files", func() error {
		r, err := firstRange(proc)
		if err != nil {
			return err
		}
		return readELF(proc + "/map_files/" + r)
	})
	check("read_kallsyms_addresses", func() error {
		b, err := os.ReadFile("/proc/kallsyms")
		if err != nil {
			return err
		}
		if bytes.HasPrefix(b, []byte("0000000000000000 ")) {
			return errors.New("addresses are hidden (zero)")
		}
		return nil
	})
	check("read_btf_vmlinux", func() error { return readMagic("/sys/kernel/btf/vmlinux", []byte{0x9f, 0xeb}) })
	check("read_proc_pid_cgroup", func() error { _, err := os.ReadFile(proc + "/cgroup"); return err })
}

func check(name string, f func() error) {
	if err := f(); err != nil {
		fmt.Printf("%s FAIL: %v\n", name, err)
		return
	}
	fmt.Printf("%s ok\n", name)
}

func newMap() (*ebpf.Map, error) {
	return ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
}

// newProg loads a perf-event program that uses the helpers a stack
// sampler needs: bpf_get_current_pid_tgid, bpf_get_current_cgroup_id,
// bpf_probe_read_user and a map update.
func newProg(m *ebpf.Map) (*ebpf.Program, error) {
	return ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.PerfEvent,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1), // ctx
			asm.FnGetCurrentPidTgid.Call(),
			asm.FnGetCurrentCgroupId.Call(),
			asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
			// bpf_probe_read_user(fp-24, 8, ctx->regs.sp): read 8 bytes of
			// the user stack. Offset 152 is regs.sp in x86-64 pt_regs; the
			// value read does not matter, the verifier's acceptance does.
			asm.LoadMem(asm.R3, asm.R6, 152, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, -24),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadUser.Call(),
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
}

// perfAttach opens a cpu-clock sampling event and attaches the program.
func perfAttach(pid, cpu int) error {
	m, err := newMap()
	if err != nil {
		return fmt.Errorf("map: %w", err)
	}
	defer m.Close()
	p, err := newProg(m)
	if err != nil {
		return fmt.Errorf("prog: %w", err)
	}
	defer p.Close()
	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(binary.Size(unix.PerfEventAttr{})),
		Sample: 19,
		Bits:   unix.PerfBitDisabled | unix.PerfBitFreq,
	}
	fd, err := unix.PerfEventOpen(&attr, pid, cpu, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("perf_event_open: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, p.FD()); err != nil {
		return fmt.Errorf("PERF_EVENT_IOC_SET_BPF: %w", err)
	}
	return nil
}

func readELF(name string) error { return readMagic(name, []byte("\x7fELF")) }

func readMagic(name string, magic []byte) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, len(magic))
	if _, err := f.ReadAt(b, 0); err != nil {
		return err
	}
	if !bytes.Equal(b, magic) {
		return fmt.Errorf("%s: bad magic %x", name, b)
	}
	return nil
}

// firstRange returns the address range of the first file mapping at file
// offset 0 in proc/maps, as named in proc/map_files.
func firstRange(proc string) (string, error) {
	b, err := os.ReadFile(proc + "/maps")
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && f[2] == "00000000" && strings.HasPrefix(f[5], "/") {
			return f[0], nil
		}
	}
	return "", errors.New("no file mapping in maps")
}
