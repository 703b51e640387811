package unwinder

import (
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestStackSwitchRows checks, against objdump, the rows of the Go runtime
// functions that switch to the system stack (stackSwitchFuncs: the calls
// into C and into the vDSO, systemstack) in the cgo workload's table.
// From the instruction after their "push %rbp; mov %rsp,%rbp" on, SP may
// be on the system stack while FP is the frame record on the goroutine
// stack, so every instruction but a "ret" must be a stack-switch row, the
// "ret"s must be CFA = SP+8, and no other function may have a
// stack-switch row. A frame-pointer row there would stop the walk of a
// sample taken after the switch (the caller's SP below the stopped one).
func TestStackSwitchRows(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("stack switches are recognized on amd64 only")
	}
	bin := workload(t, "nofp-cgo")
	out, err := exec.Command(testenv.RequireTool(t, "objdump"), "-d", "--no-show-raw-insn", bin).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	_, tab := buildFile(t, bin)
	funcRe := regexp.MustCompile(`(?m)^([0-9a-f]+) <([^>]+)>:$`)
	insnRe := regexp.MustCompile(`(?m)^\s+([0-9a-f]+):\s+(\S+)`)
	type span struct{ lo, hi uint64 }
	var switches []span
	checked := 0
	heads := funcRe.FindAllStringSubmatchIndex(string(out), -1)
	for k, fn := range heads {
		name := string(out[fn[4]:fn[5]])
		if _, ok := stackSwitchFuncs[name]; !ok {
			continue
		}
		end := len(out)
		if k+1 < len(heads) {
			end = heads[k+1][0]
		}
		insns := insnRe.FindAllStringSubmatch(string(out[fn[1]:end]), -1)
		if len(insns) < 3 || insns[0][2] != "push" || insns[1][2] != "mov" {
			t.Errorf("%s does not start with push %%rbp; mov %%rsp,%%rbp", name)
			continue
		}
		lo, _ := strconv.ParseUint(insns[2][1], 16, 64)
		var hi uint64
		// Up to the first "pop %rbp" (the switched path's return),
		// and the "ret" after it; the paths after that (no switch, or
		// a crash) are not checked.
		popped := false
		for _, in := range insns[2:] {
			pc, _ := strconv.ParseUint(in[1], 16, 64)
			hi = pc + 1
			r, _ := tab.Lookup(pc)
			checked++
			if popped {
				if strings.HasPrefix(in[2], "ret") && (r.Kind != KindCFA || r.CFAReg != RegSP || r.CFAOffset != 8) {
					t.Errorf("%s: ret at %#x: row %+v, want CFA = SP+8", name, pc, r)
				}
				break
			}
			if r.Kind != KindStackSwitch {
				t.Errorf("%s: %s at %#x: row %+v, want a stack switch", name, in[2], pc, r)
			}
			popped = in[2] == "pop"
		}
		for _, in := range insns[2:] {
			if pc, _ := strconv.ParseUint(in[1], 16, 64); in[2] != "int3" {
				hi = pc + 1
			}
		}
		switches = append(switches, span{lo, hi})
	}
	if len(switches) < 3 || checked < 50 {
		t.Fatalf("objdump shows only %d stack switch functions (%d instructions) in %s", len(switches), checked, bin)
	}
	for _, r := range tab.Rows() {
		if r.Kind != KindStackSwitch {
			continue
		}
		in := false
		for _, s := range switches {
			in = in || r.PC >= s.lo && r.PC < s.hi
		}
		if !in {
			t.Errorf("stack-switch row %+v outside the stack switch functions", r)
		}
	}
}
