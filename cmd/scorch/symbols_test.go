package main

import (
	"debug/elf"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// TestRecordCxxSymbols profiles an optimized C++ program (-O2 -g: templates,
// namespaces, lambdas, libstdc++ inlined several levels deep) and checks
// that the profile names its frames as addr2line does: demangled, with
// inlined frames and file:line, and that go tool pprof -lines shows them.
func TestRecordCxxSymbols(t *testing.T) {
	requireRoot(t)
	testenv.RequireTool(t, "addr2line")
	testenv.RequireTool(t, "llvm-symbolizer")
	w := workload(t, "dwarf-cpp", "100000000")
	bin := w.Path
	p, out, _ := record(t, "--duration", "3s", "--frequency", "499", "--pid", fmt.Sprint(w.Process.Pid))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	type probe struct {
		loc   *profile.Location
		vaddr uint64
	}
	var probes []probe
	var addrs []uint64
	for _, loc := range p.Location {
		if loc.Mapping == nil || loc.Mapping.File != bin || len(loc.Line) == 0 {
			continue
		}
		vaddr, ok := fileVaddr(f, loc.Address-loc.Mapping.Start+loc.Mapping.Offset)
		if !ok {
			continue
		}
		probes = append(probes, probe{loc, vaddr})
		// A location is looked up at its address when it was a leaf and
		// at address-1 when it was a return address: accept either.
		addrs = append(addrs, vaddr, vaddr-1)
	}
	// Two oracles: binutils 2.40's addr2line misnames some inlined static
	// functions and files, where llvm-symbolizer is right; agreeing with
	// either counts.
	gnu := symbolizeWith(t, addrs, "addr2line", "-f", "-i", "-C", "-e", bin)
	llvm := symbolizeWith(t, addrs, "llvm-symbolizer", "--obj="+bin, "--demangle")

	var checked, agree, inlined int
	var mismatches []string
	for _, pr := range probes {
		ours := noClones(chain(pr.loc))
		want := []string{gnu[pr.vaddr], gnu[pr.vaddr-1], noClones(llvm[pr.vaddr]), noClones(llvm[pr.vaddr-1])}
		if strings.HasPrefix(want[0], "?? ") && strings.HasPrefix(want[1], "?? ") {
			continue // no tool names it (PLT stubs): nothing to compare
		}
		checked++
		if slices.Contains(want, ours) {
			agree++
		} else {
			mismatches = append(mismatches, fmt.Sprintf("%#x: ours %q, addr2line %q / %q, llvm-symbolizer %q / %q", pr.vaddr, ours, want[0], want[1], want[2], want[3]))
		}
		if len(pr.loc.Line) > 1 {
			inlined++
		}
	}
	t.Logf("%d locations in dwarf-cpp named by the tools, %d equal, %d with inlined frames", checked, agree, inlined)
	for i, m := range mismatches {
		if i == 10 {
			t.Logf("... and %d more", len(mismatches)-i)
			break
		}
		t.Log("mismatch:", m)
	}
	if checked < 10 {
		t.Fatalf("only %d locations of the workload", checked)
	}
	if float64(agree) < 0.995*float64(checked) {
		t.Errorf("%d of %d locations differ from addr2line", checked-agree, checked)
	}
	if inlined == 0 {
		t.Error("no location with inlined frames")
	}

	top, err := exec.Command("go", "tool", "pprof", "-lines", "-top", out).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof: %v\n%s", err, top)
	}
	s := string(top)
	for _, want := range []string{"scorch::geo::", "main.cc:", "(inline)"} {
		if !strings.Contains(s, want) {
			t.Errorf("go tool pprof -lines -top shows no %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "_ZN") {
		t.Errorf("mangled names in the profile:\n%s", s)
	}
}

// clones matches the suffix GCC's clones (.isra.0, .constprop.1, .part.0)
// get in llvm-symbolizer's names: addr2line omits it.
var clones = regexp.MustCompile(` \((\.[a-z]+\.[0-9]+)+\)`)

func noClones(s string) string { return clones.ReplaceAllString(s, "") }

// chain renders a location as addr2line -f -i -C prints it: function and
// file:line per level, innermost first.
func chain(loc *profile.Location) string {
	var parts []string
	for _, ln := range loc.Line {
		parts = append(parts, frameString(ln.Function.Name, ln.Function.Filename, fmt.Sprint(ln.Line)))
	}
	return strings.Join(parts, " | ")
}

// symbolizeWith runs an addr2line-style tool once over addrs (on its
// standard input) and returns, per address, its answer rendered as chain
// renders ours. Both tools print pairs of lines (function, file:line) per
// inline level; llvm-symbolizer ends each address
// with an empty line, addr2line does not, so addr2line gets a sentinel
// address after each real one.
func symbolizeWith(t *testing.T, addrs []uint64, tool string, args ...string) map[uint64]string {
	t.Helper()
	var in strings.Builder
	const sentinel = 0
	gnu := tool == "addr2line"
	for _, a := range addrs {
		fmt.Fprintf(&in, "%#x\n", a)
		if gnu {
			fmt.Fprintf(&in, "%#x\n", sentinel)
		}
	}
	cmd := exec.Command(tool, args...)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	lines := strings.Split(string(out), "\n")
	res := map[uint64]string{}
	i := 0
	for _, a := range addrs {
		var parts []string
		for i+1 < len(lines) {
			fn, fileLine := lines[i], lines[i+1]
			if !gnu && fn == "" {
				i++
				break
			}
			if gnu && fn == "??" && len(parts) > 0 && strings.HasPrefix(fileLine, "??:") {
				i += 2 // the sentinel's answer ends this address
				break
			}
			i += 2
			if j := strings.Index(fileLine, " (discriminator"); j >= 0 {
				fileLine = fileLine[:j]
			}
			file, rest, _ := strings.Cut(fileLine, ":")
			line, _, _ := strings.Cut(rest, ":")
			parts = append(parts, frameString(fn, file, line))
			if gnu && fn == "??" {
				i += 2 // an unnamed address, then the sentinel's answer
				break
			}
		}
		res[a] = strings.Join(parts, " | ")
	}
	return res
}

// frameString renders one level; an unknown file or line ("" and 0 for us,
// "??" and "?" or "0" for the tools) renders the same for all.
func frameString(fn, file, line string) string {
	if file == "" || file == "??" {
		file = "??"
	} else {
		file = filepath.Base(file)
	}
	if line == "" || line == "?" || file == "??" {
		line = "0"
	}
	return fmt.Sprintf("%s %s:%s", fn, file, line)
}

// fileVaddr turns a file offset into the ELF virtual address that maps it.
func fileVaddr(f *elf.File, off uint64) (uint64, bool) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off < p.Off+p.Filesz {
			return off - p.Off + p.Vaddr, true
		}
	}
	return 0, false
}
