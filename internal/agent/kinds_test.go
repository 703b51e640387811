package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scorch-profiler/scorch/exporter"
	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/symbolizer"
	"github.com/scorch-profiler/scorch/web"
)

// jitScript spends about two thirds of its wall time in scorchHotJit, a JS
// function V8 compiles (and, with --no-turbo-inlining, keeps as a frame of
// its own), and one third reading /dev/zero, whose cost is in the kernel.
// The phases are split by wall time, so a busy machine slows both alike.
const jitScript = `'use strict';
const fs = require('fs');
function scorchHotJit(n) {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s * 31 + i) | 0;
  return s;
}
const fd = fs.openSync('/dev/zero', 'r');
const buf = Buffer.alloc(1 << 20);
let acc = 0;
for (;;) {
  let t = Date.now();
  while (Date.now() - t < 20) acc ^= scorchHotJit(100000);
  t = Date.now();
  while (Date.now() - t < 10) fs.readSync(fd, buf, 0, buf.length, null);
}
`

// startNodeJIT starts jitScript under node --perf-basic-prof and waits until
// V8 has written the optimized scorchHotJit to /tmp/perf-PID.map. It
// returns the pid and the perf map's path.
func startNodeJIT(t *testing.T) (int, string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("node not found: install Node.js (Debian package nodejs) to test JIT frames")
		}
		t.Skip("node not found: install Node.js (Debian package nodejs) to test JIT frames")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "jit.js")
	if err := os.WriteFile(script, []byte(jitScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "--perf-basic-prof", "--no-turbo-inlining", script)
	cmd.Stderr = os.Stderr
	cmd.Dir = dir // where V8 writes its isolate-*-v8.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	perfMap := fmt.Sprintf("/tmp/perf-%d.map", pid)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(perfMap) // V8 leaves it behind
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if b, _ := os.ReadFile(perfMap); strings.Contains(string(b), "JS:*scorchHotJit") {
			return pid, perfMap
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not write an optimized scorchHotJit to %s within 60s", perfMap)
		}
	}
}

// symbolNames reads the set of names in a file of "FIELD FIELD NAME..."
// lines from field skip on: kallsyms ("addr type name [module]", skip 2,
// first word only) or a perf map ("addr size name with spaces", skip 2).
func symbolNames(t *testing.T, path string, wholeRest bool) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 3)
		if len(fields) < 3 {
			continue
		}
		name := fields[2]
		if !wholeRest {
			name, _, _ = strings.Cut(name, "\t")
		}
		names[name] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// isNodeStart matches node's entry point, node::Start, however demangled.
func isNodeStart(name string) bool {
	return name == "node::Start" || strings.HasPrefix(name, "node::Start(")
}

// atLeast reports whether k of n samples are consistent with a true share
// of at least p: k is not more than four binomial standard deviations
// below n*p (a false failure has odds under 1 in 30000).
func atLeast(k, n int64, p float64) bool {
	return float64(k) >= float64(n)*p-4*math.Sqrt(float64(n)*p*(1-p))
}

// TestJITFramesInViewer follows a JIT frame from the symbolizer through the
// exporter and the store to the viewer's JSON: a real agent samples a Node
// process started with --perf-basic-prof, and the viewer over the agent's
// store must name the hot JS function with the JIT class, its /dev/zero
// reads with the kernel class and node's own code (node::Start) with the
// user class. The
// profiles pushed to Pyroscope carry the same kinds.
func TestJITFramesInViewer(t *testing.T) {
	requireRoot(t)
	pid, perfMap := startNodeJIT(t)

	rcv := &receiver{}
	url := serveReceiver(t, rcv)

	dir := t.TempDir()
	cfg := testConfig(t,
		"--interval", "2s", "--frequency", "199", "--data-dir", dir, "--listen", "127.0.0.1:0",
		"--pyroscope-url", url,
		"--include", fmt.Sprintf("pid:%d", pid), "--service-name", fmt.Sprintf("jit=pid:%d", pid))
	stop := runAgent(t, cfg)
	// Enough samples for the shares below to mean something, however busy
	// the machine is.
	const want = 400
	var pushed int64
	for deadline := time.Now().Add(180 * time.Second); pushed < want && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		pushed = 0
		for _, w := range rcv.windows("jit") {
			for _, s := range w.prof.Sample {
				pushed += s.Value[0]
			}
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if pushed < want {
		t.Fatalf("only %d samples of node pushed in 180s, want %d", pushed, want)
	}

	// The pushed profiles: every frame named from the perf map is under
	// the [jit] mapping.
	var pushedJIT, misfiled int
	for _, w := range rcv.windows("jit") {
		for _, l := range w.prof.Location {
			if len(l.Line) == 0 || !strings.Contains(l.Line[0].Function.Name, "scorchHotJit") {
				continue
			}
			pushedJIT++
			if l.Mapping == nil || l.Mapping.File != exporter.MappingJIT || exporter.FrameKind(l) != symbolizer.KindJIT {
				if misfiled++; misfiled == 1 {
					t.Errorf("pushed %s in mapping %+v, want %s", l.Line[0].Function.Name, l.Mapping, exporter.MappingJIT)
				}
			}
		}
	}
	if pushedJIT == 0 || misfiled > 0 {
		t.Errorf("%d pushed scorchHotJit locations, %d of them not in the [jit] mapping", pushedJIT, misfiled)
	}

	// The viewer over the agent's store.
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	viewer := web.NewHandler(st, web.Options{})
	get := func(url string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		viewer.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", url, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	var top struct {
		Total int64
		Rows  []struct {
			Name, Kind  string
			Self, Total int64
		}
	}
	get("/api/top?service=jit&limit=100000", &top)
	var fg struct {
		Total      int64
		Kinds      []string
		Names      []string
		FrameKinds []int `json:"frame_kinds"`
	}
	get("/api/flamegraph?service=jit", &fg)

	kallsyms := symbolNames(t, "/proc/kallsyms", false)
	jitNames := symbolNames(t, perfMap, true)
	unnamed := regexp.MustCompile(`^\[[^\]]+\](\+0x[0-9a-f]+)?$`) // [kernel], [ext4]+0x10, [anon]+0x20
	n := top.Total
	var hotSelf, kernelSelf, startTotal int64
	for _, r := range top.Rows {
		switch {
		case r.Kind == "jit" && !jitNames[r.Name] && !unnamed.MatchString(r.Name):
			t.Errorf("%q (%d samples) is in the jit class but not in %s", r.Name, r.Total, perfMap)
		case r.Kind != "jit" && jitNames[r.Name]:
			t.Errorf("%q (%d samples) is named by %s but in the %s class", r.Name, r.Total, perfMap, r.Kind)
		case r.Kind == "kernel" && !kallsyms[r.Name] && !unnamed.MatchString(r.Name):
			t.Errorf("%q (%d samples) is in the kernel class but not in /proc/kallsyms", r.Name, r.Total)
		}
		if strings.Contains(r.Name, "scorchHotJit") && r.Kind == "jit" {
			hotSelf += r.Self
		}
		if r.Kind == "kernel" {
			kernelSelf += r.Self
		}
		if isNodeStart(r.Name) && r.Kind == "user" {
			startTotal += r.Total
		}
	}
	t.Logf("%d samples of node in the store (%d pushed): scorchHotJit (jit) %d self, kernel %d self, node::Start (user) %d total",
		n, pushed, hotSelf, kernelSelf, startTotal)
	if n < want {
		t.Fatalf("the store has %d samples of node, the receiver got %d", n, pushed)
	}
	// scorchHotJit has two thirds of the wall time and the reads a third,
	// most of it in the kernel; node::Start (main tail-calls it) is below
	// every sample of the main thread. Ask for about half of each, judged binomially.
	if !atLeast(hotSelf, n, 1.0/3) {
		t.Errorf("scorchHotJit as a jit frame in %d of %d samples, want at least a third", hotSelf, n)
	}
	if !atLeast(kernelSelf, n, 1.0/8) {
		t.Errorf("a kernel leaf in %d of %d samples, want at least an eighth", kernelSelf, n)
	}
	if !atLeast(startTotal, n, 1.0/2) {
		t.Errorf("node::Start as a user frame in %d of %d samples, want at least half", startTotal, n)
	}

	// The flame graph the page draws carries the same classes.
	if fg.Total != n {
		t.Errorf("flame graph total %d, top total %d", fg.Total, n)
	}
	seen := map[string]bool{}
	for i, name := range fg.Names {
		k := fg.Kinds[fg.FrameKinds[i]]
		switch {
		case strings.Contains(name, "scorchHotJit") && strings.HasPrefix(name, "JS:"):
			seen["jit"] = true
			if k != "jit" {
				t.Errorf("flame graph: %q has class %q, want jit", name, k)
			}
		case isNodeStart(name):
			seen["user"] = seen["user"] || k == "user"
		case kallsyms[name]:
			seen["kernel"] = seen["kernel"] || k == "kernel"
		}
	}
	for _, k := range []string{"jit", "user", "kernel"} {
		if !seen[k] {
			t.Errorf("flame graph: no %s frame (scorchHotJit, node::Start, a kallsyms name)", k)
		}
	}
}
