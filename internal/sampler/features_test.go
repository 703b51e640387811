package sampler

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/testenv"

	"github.com/scorch-profiler/scorch/bpf"
)

// helperSince is the upstream release that added each helper the programs
// call (include/uapi/linux/bpf.h history), as "major.minor" compared below.
var helperSince = map[asm.BuiltinFunc][2]int{
	asm.FnMapLookupElem:      {3, 19},
	asm.FnMapUpdateElem:      {3, 19},
	asm.FnMapDeleteElem:      {3, 19},
	asm.FnGetCurrentPidTgid:  {4, 2},
	asm.FnGetCurrentComm:     {4, 2},
	asm.FnGetCurrentTask:     {4, 8},
	asm.FnGetStack:           {4, 18},
	asm.FnGetCurrentCgroupId: {4, 18},
	asm.FnProbeReadKernel:    {5, 5},
	asm.FnProbeReadUser:      {5, 5},
	asm.FnRingbufReserve:     {5, 8},
	asm.FnRingbufSubmit:      {5, 8},
	asm.FnRingbufOutput:      {5, 8},
	asm.FnGetCurrentTaskBtf:  {5, 11},
	asm.FnTaskPtRegs:         {5, 15},
	asm.FnLoop:               {5, 17},
	asm.FnFindVma:            {5, 17},
	asm.FnKtimeGetNs:         {4, 1},
}

// newestHelper returns the newest helper the object's programs call and the
// release that added it.
func newestHelper(t *testing.T, spec *ebpf.CollectionSpec) (asm.BuiltinFunc, [2]int) {
	t.Helper()
	var newest asm.BuiltinFunc
	var since [2]int
	for name, p := range spec.Programs {
		for _, ins := range p.Instructions {
			if !ins.IsBuiltinCall() {
				continue
			}
			fn := asm.BuiltinFunc(ins.Constant)
			v, ok := helperSince[fn]
			if !ok {
				t.Fatalf("program %s calls %v: add it to helperSince with the release that added it", name, fn)
			}
			if slices.Compare(v[:], since[:]) > 0 {
				newest, since = fn, v
			}
		}
	}
	return newest, since
}

// TestProgramKernelFloor reads the helpers each committed object calls: the
// frame-pointer program must load on 5.8 (ring buffers), the table program
// needs 5.17 (bpf_loop), and chooseProgram's tables must say the same.
func TestProgramKernelFloor(t *testing.T) {
	fp, err := bpf.LoadScorchFp()
	if err != nil {
		t.Fatal(err)
	}
	if fn, v := newestHelper(t, fp); v != [2]int{5, 8} {
		t.Errorf("the frame-pointer program's newest helper is %v (Linux %d.%d); want Linux 5.8 at most, the documented floor", fn, v[0], v[1])
	}
	full, err := bpf.LoadScorch()
	if err != nil {
		t.Fatal(err)
	}
	// bpf_loop and bpf_find_vma both came in 5.17: the newest release,
	// not which of the two is met first, is what must hold.
	if fn, v := newestHelper(t, full); v != [2]int{5, 17} {
		t.Errorf("the table program's newest helper is %v (Linux %d.%d); want Linux 5.17 (bpf_loop, bpf_find_vma)", fn, v[0], v[1])
	}
	if last := tableFeatures[len(tableFeatures)-1]; last.since != "5.17" {
		t.Errorf("tableFeatures ends at %s, want bpf_loop's 5.17", last.since)
	}
	// Both objects declare the same maps and programs: Open loads either
	// into bpf.ScorchObjects.
	for name := range full.Maps {
		if _, ok := fp.Maps[name]; !ok {
			t.Errorf("map %s is missing from the frame-pointer object", name)
		}
	}
	for name := range full.Programs {
		if _, ok := fp.Programs[name]; !ok {
			t.Errorf("program %s is missing from the frame-pointer object", name)
		}
	}
}

// TestFramePointerProgramByIoctl loads the frame-pointer program as
// FramePointersOnly asks, attaches it by ioctl as on kernels before 5.15,
// and checks that a busy child's samples arrive with user stacks.
func TestFramePointerProgramByIoctl(t *testing.T) {
	testenv.RequireRoot(t)
	attachByIoctl = true
	defer func() { attachByIoctl = false }()
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := uint32(cmd.Process.Pid)

	s, err := Open(Options{Frequency: 199, Pids: []uint32{pid}, FramePointersOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Program != ProgramFramePointers {
		t.Fatalf("loaded the %s program; want %s", s.Program, ProgramFramePointers)
	}
	if len(s.links) != 2 { // the exec and exit hooks only: perf events by ioctl
		t.Errorf("%d BPF links; want 2 (lifecycle hooks), the perf events attached by ioctl", len(s.links))
	}
	// Drain until 200 samples of the child arrived: about a second at
	// 199 Hz on an idle CPU, longer on a busy machine where the child
	// waits for one. No samples in 20 s means the attachment does not work.
	total, withUser := drainBusy(t, s, pid, 1, 20*time.Second, func(st Stats) {
		if st.Unwound != 0 {
			t.Fatalf("the frame-pointer program walked %d stacks with tables", st.Unwound)
		}
	})
	// The shell loop makes no system calls: every sample interrupts it in
	// user mode or on its way back there, and has its user stack. Allow
	// 2% for samples during a page fault or exit.
	if withUser*100 < total*98 {
		t.Fatalf("only %d of %d samples have a user stack", withUser, total)
	}
}

// TestChooseProgram runs chooseProgram against fake probes: what is missing
// decides the program, and the user is told which feature and release.
func TestChooseProgram(t *testing.T) {
	have := func() error { return nil }
	lack := func() error { return ebpf.ErrNotSupported }
	denied := func() error { return unix.EPERM }
	saved, savedTables := requiredFeatures, tableFeatures
	defer func() { requiredFeatures, tableFeatures = saved, savedTables }()

	for _, tc := range []struct {
		name              string
		required, tables  func() error
		framePointersOnly bool
		want              Program
		wantInErr         string // the error names this; "" = no error
		wantNoTables      string // the log names this
	}{
		{name: "all there", required: have, tables: have, want: ProgramTables},
		{name: "no bpf_loop", required: have, tables: lack, want: ProgramFramePointers, wantNoTables: "bpf_loop (Linux 5.17)"},
		{name: "forced", required: have, tables: nil, framePointersOnly: true, want: ProgramFramePointers},
		{name: "no ring buffer", required: lack, tables: nil, wantInErr: "the kernel lacks ring buffers (Linux 5.8)"},
		{name: "probe denied", required: denied, tables: nil, wantInErr: "probe the kernel for ring buffers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requiredFeatures = []kernelFeature{{"ring buffers", "5.8", tc.required}}
			tables := tc.tables
			if tables == nil {
				tables = func() error { t.Fatal("the table features were probed"); return nil }
			}
			tableFeatures = []kernelFeature{{"bpf_loop", "5.17", tables}}
			p, noTables, err := chooseProgram(tc.framePointersOnly)
			if tc.wantInErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
					t.Fatalf("error %v; want one containing %q", err, tc.wantInErr)
				}
				var rerr *RequirementError
				if errors.Is(tc.required(), ebpf.ErrNotSupported) && !errors.As(err, &rerr) {
					t.Errorf("a missing feature gave %T, not a *RequirementError", err)
				}
				return
			}
			if err != nil || p != tc.want {
				t.Fatalf("got %s, %v; want %s", p, err, tc.want)
			}
			if got := strings.Join(noTables, ", "); got != tc.wantNoTables {
				t.Errorf("missing table features %q; want %q", got, tc.wantNoTables)
			}
		})
	}
}
