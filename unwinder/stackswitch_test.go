package unwinder

import (
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestStackSwitchRows checks, against objdump, that the calls of Go's
// runtime into C and into the vDSO on the system stack are stack-switch
// rows in the cgo workload's table, and that nothing else is.
func TestStackSwitchRows(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("stack switches are recognized on amd64 only")
	}
	bin := workload(t, "nofp-cgo")
	out, err := exec.Command(testenv.RequireTool(t, "objdump"), "-d", "--no-show-raw-insn", bin).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	// Calls on the system stack: asmcgocall's call of its landing pad,
	// and the register calls of systemstack and nanotime1.
	re := regexp.MustCompile(`(?m)^\s+([0-9a-f]+):\s+call\s+(?:[0-9a-f]+ <runtime\.asmcgocall_landingpad\.abi0>|\*%r[a-z0-9]+)`)
	funcRe := regexp.MustCompile(`(?m)^[0-9a-f]+ <([^>]+)>:$`)
	want := map[uint64]bool{}
	for _, fn := range funcRe.FindAllStringSubmatchIndex(string(out), -1) {
		if _, ok := stackSwitchFuncs[string(out[fn[2]:fn[3]])]; !ok {
			continue
		}
		end := len(out)
		if next := funcRe.FindStringIndex(string(out[fn[1]:])); next != nil {
			end = fn[1] + next[0]
		}
		for _, m := range re.FindAllStringSubmatch(string(out[fn[1]:end]), -1) {
			pc, _ := strconv.ParseUint(m[1], 16, 64)
			want[pc] = true
		}
	}
	if len(want) < 3 {
		t.Fatalf("objdump shows only %d system-stack calls in %s", len(want), bin)
	}
	_, tab := buildFile(t, bin)
	for pc := range want {
		if r, _ := tab.Lookup(pc); r.Kind != KindStackSwitch {
			t.Errorf("call at %#x: row %+v, want a stack switch", pc, r)
		}
	}
	n := 0
	for _, r := range tab.Rows() {
		if r.Kind == KindStackSwitch {
			n++
		}
	}
	if n != len(want) {
		t.Errorf("%d stack-switch rows, objdump shows %d calls on the system stack", n, len(want))
	}
}
