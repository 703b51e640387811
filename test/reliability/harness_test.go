// Package reliability holds whole-binary tests of `scorch agent`: they
// build bin/scorch as the Dockerfile does (CGO_ENABLED=0), run it as a
// separate process against an in-process Pyroscope receiver on loopback,
// and drive it through churn, vanishing files, map pressure, export and
// disk faults, restarts and a soak; the field tests (field_test.go) run
// `scorch record` over workloads with known caller shares on a quiet and a
// busy host. They need root (the agent loads BPF programs); in CI (CI set)
// they never skip.
package reliability

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"

	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

var (
	root      = filepath.Join("..", "..")
	scorchBin string // built once by TestMain
)

// requireRoot and workload are testenv's, by the names this package's
// tests call them.
var (
	requireRoot = testenv.RequireRoot
	workload    = testenv.Workload
)

func TestMain(m *testing.M) {
	flag.Parse()
	if bin := os.Getenv("SCORCH_TEST_BIN"); bin != "" {
		// A binary built elsewhere (e.g. from a clean checkout while the
		// working tree is mid-change).
		scorchBin = bin
		os.Exit(m.Run())
	}
	if testing.Short() {
		// Every test here runs the agent, which needs root: none runs
		// with -short (testenv.RequireRoot), so nothing is built.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "scorch-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// A binary of our own (not bin/scorch, which others may be rebuilding),
	// static like the release build so that capabilities can be dropped.
	scorchBin = filepath.Join(dir, "scorch")
	cmd := exec.Command("go", "build", "-o", scorchBin, "./cmd/scorch")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/scorch: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is a running `scorch agent`.
type agentProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	pid  int
	addr string // of the listener
	logs *logBuffer
	done chan error
}

type logBuffer struct {
	mu    sync.Mutex
	lines []map[string]any
	raw   bytes.Buffer
}

func (b *logBuffer) add(line []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.raw.Write(line)
	b.raw.WriteByte('\n')
	var m map[string]any
	if json.Unmarshal(line, &m) == nil {
		b.lines = append(b.lines, m)
	}
}

// find returns the log records whose msg contains s.
func (b *logBuffer) find(s string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, m := range b.lines {
		if msg, _ := m["msg"].(string); strings.Contains(msg, s) {
			out = append(out, m)
		}
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

// startAgent starts the agent with args (after the listener and log
// settings) and waits until it samples.
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	a, err := launchAgent(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.kill() })
	return a
}

func launchAgent(t *testing.T, args ...string) (*agentProc, error) {
	t.Helper()
	all := append([]string{"agent", "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(scorchBin, all...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no SCORCH_* from the caller
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agentProc{t: t, cmd: cmd, pid: cmd.Process.Pid, logs: &logBuffer{}, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Bytes()
			a.logs.add(line)
			var m map[string]any
			if json.Unmarshal(line, &m) == nil {
				switch m["msg"] {
				case "listening":
					a.logs.mu.Lock()
					a.addr, _ = m["addr"].(string)
					a.logs.mu.Unlock()
				case "profiling":
					once.Do(func() { close(ready) })
				}
			}
		}
		a.done <- cmd.Wait()
	}()
	select {
	case <-ready:
		a.logs.mu.Lock()
		defer a.logs.mu.Unlock()
		return a, nil
	case err := <-a.done:
		a.done <- err
		return a, fmt.Errorf("agent exited before sampling: %v\n%s", err, a.logs)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, fmt.Errorf("agent not sampling after 60s:\n%s", a.logs)
	}
}

// stop sends SIGTERM and waits for the agent to flush and exit.
//
// The agent promises to flush the last window and exit 0 (README), not a
// time: the last window is named like any other, and on a loaded host
// (the agent names every process on it, other suites' freshly built test
// binaries included) one goroutine dump showed the final drain still in
// elfsym.Parse 30 s after SIGTERM, the agent getting a sliver of a CPU. So
// a hang is judged by progress: the agent using no CPU time for
// stallLimit (longer than its own bounded waits: the exporter's 5 s flush
// and the listener's 5 s shutdown), or not done after stopLimit.
func (a *agentProc) stop() error {
	a.t.Helper()
	const stallLimit, stopLimit = 20 * time.Second, 5 * time.Minute
	a.cmd.Process.Signal(syscall.SIGTERM)
	start := time.Now()
	lastCPU, progressed := procCPUTicks(a.pid), start
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-a.done:
			a.done <- err
			return err
		case now := <-tick.C:
			if cpu := procCPUTicks(a.pid); cpu != lastCPU {
				lastCPU, progressed = cpu, now
			}
			if now.Sub(progressed) < stallLimit && now.Sub(start) < stopLimit {
				continue
			}
			// What the agent is doing: every goroutine's stack, running
			// ones included, from its own /debug/pprof (still served
			// until Run returns).
			stacks := "(no listener)"
			if a.addr != "" {
				stacks = httpGet("http://" + a.addr + "/debug/pprof/goroutine?debug=2")
			}
			a.cmd.Process.Kill()
			return fmt.Errorf("agent not done %s after SIGTERM, %s of it without using CPU; its goroutines:\n%s",
				now.Sub(start).Round(time.Second), now.Sub(progressed).Round(time.Second), stacks)
		}
	}
}

// procCPUTicks is the CPU time process pid has used (user and system, in
// clock ticks), from /proc/PID/stat; 0 once it is gone.
func procCPUTicks(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15 of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// httpGet returns the body at url, or the error.
func httpGet(url string) string {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func (a *agentProc) kill() {
	a.cmd.Process.Kill()
	select {
	case err := <-a.done:
		a.done <- err
	case <-time.After(10 * time.Second):
	}
}

func (a *agentProc) alive() bool {
	select {
	case err := <-a.done:
		a.done <- err
		return false
	default:
		return true
	}
}

// metrics scrapes /metrics: the value of each series, keyed by name and
// labels as written ("scorch_lost_total{reason=\"x\"}").
func (a *agentProc) metrics() map[string]float64 {
	a.t.Helper()
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		a.t.Fatalf("scrape: %v\nagent log:\n%s", err, a.logs)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// saveHeapProfile writes the agent's heap profile (from its /debug/pprof)
// to file, for a person chasing memory growth; failures are logged.
func (a *agentProc) saveHeapProfile(file string) {
	resp, err := http.Get("http://" + a.addr + "/debug/pprof/heap")
	if err != nil {
		a.t.Logf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(file, b, 0o644)
	}
	if err != nil {
		a.t.Logf("heap profile: %v", err)
	}
}

// sum adds the series of metric name over all its labels.
func sum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// rss is the agent's resident memory in bytes, from /proc.
func (a *agentProc) rss() int64 {
	return procStatusKB(a.pid, "VmRSS") << 10
}

func procStatusKB(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// receiver is a Pyroscope push endpoint built from Pyroscope's protocol
// definitions, behind a fault injector: mode says how it answers.
type receiver struct {
	pushv1connect.UnimplementedPusherServiceHandler
	mode     atomic.Value // "ok", "503", "429", "stall"
	requests atomic.Int64
	refused  atomic.Int64
	// abandoned counts requests the client gave up on before the answer.
	abandoned atomic.Int64
	mu        sync.Mutex
	got       []pushed
	stallCh   chan struct{}
}

type pushed struct {
	labels map[string]string
	prof   *profile.Profile
}

// storeWindows reads every window of the agent's store in dir.
func storeWindows(t *testing.T, dir string) []pushed {
	t.Helper()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]pushed, 0, len(ws))
	for _, w := range ws {
		p, err := st.Open(context.Background(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pushed{labels: w.Labels, prof: p})
	}
	return out
}

// forPid returns the windows of ws that hold samples of process pid, each
// with a copy of its profile reduced to those samples: a target is a
// service, and the pid is a sample label inside its profile.
func forPid(ws []pushed, pid int) []pushed {
	var out []pushed
	for _, w := range ws {
		p := w.prof.Copy()
		p.Sample = slices.DeleteFunc(p.Sample, func(s *profile.Sample) bool { return !samplePid(s, pid) })
		if len(p.Sample) > 0 {
			out = append(out, pushed{labels: w.labels, prof: p})
		}
	}
	return out
}

// samplePid says whether s is a sample of process pid.
func samplePid(s *profile.Sample, pid int) bool {
	return len(s.NumLabel["pid"]) == 1 && s.NumLabel["pid"][0] == int64(pid)
}

func newReceiver() *receiver {
	r := &receiver{stallCh: make(chan struct{})}
	r.mode.Store("ok")
	return r
}

// handler serves the push service behind the fault injector.
func (r *receiver) handler() http.Handler {
	path, h := pushv1connect.NewPusherServiceHandler(r)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		switch r.mode.Load() {
		case "503":
			r.refused.Add(1)
			io.Copy(io.Discard, req.Body)
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		case "429":
			r.refused.Add(1)
			io.Copy(io.Discard, req.Body)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		case "stall":
			r.refused.Add(1)
			select { // hold the request until the client gives up
			case <-req.Context().Done():
			case <-r.stallCh:
			}
			return
		}
		mux.ServeHTTP(w, req)
	})
}

// Push keeps what it was sent, as a transactional server would: all of a
// request or, when the client gave up on it before the answer (its push
// timeout on a busy machine), none of it. A real server may have ingested
// such a request, and the agent's retry then duplicates it: delivery is at
// least once, the tests check that it is not more than that otherwise.
func (r *receiver) Push(ctx context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	var got []pushed
	for _, s := range req.Msg.Series {
		labels := map[string]string{}
		for _, l := range s.Labels {
			labels[l.Name] = l.Value
		}
		for _, smp := range s.Samples {
			zr, err := gzip.NewReader(bytes.NewReader(smp.RawProfile))
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, err)
			}
			raw, err := io.ReadAll(zr)
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, err)
			}
			p, err := profile.ParseData(raw)
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, err)
			}
			got = append(got, pushed{labels, p})
		}
	}
	if err := ctx.Err(); err != nil {
		r.abandoned.Add(1)
		return nil, err
	}
	r.mu.Lock()
	r.got = append(r.got, got...)
	r.mu.Unlock()
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}

// windows returns what was received for which keep says yes, by time.
func (r *receiver) windows(keep func(map[string]string) bool) []pushed {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pushed
	for _, p := range r.got {
		if keep == nil || keep(p.labels) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].prof.TimeNanos < out[j].prof.TimeNanos })
	return out
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// startReceiver serves r on loopback.
func startReceiver(t *testing.T, r *receiver) *httptest.Server {
	srv := httptest.NewServer(r.handler())
	t.Cleanup(func() {
		close(r.stallCh)
		srv.Close()
	})
	return srv
}

// frameShare counts the samples (by value) whose stack holds one of fns,
// over the samples keep selects.
func frameShare(ps []pushed, keep func(*profile.Sample) bool, fns ...string) (hit, all int64) {
	for _, p := range ps {
		for _, s := range p.prof.Sample {
			if keep != nil && !keep(s) {
				continue
			}
			all += s.Value[0]
		loc:
			for _, l := range s.Location {
				for _, ln := range l.Line {
					for _, fn := range fns {
						if ln.Function != nil && ln.Function.Name == fn {
							hit += s.Value[0]
							break loc
						}
					}
				}
			}
		}
	}
	return hit, all
}

func commIs(comm string) func(*profile.Sample) bool {
	return func(s *profile.Sample) bool {
		return len(s.Label["comm"]) > 0 && s.Label["comm"][0] == comm
	}
}

// waitFor polls cond every 200ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// churn runs short-lived processes until ctx ends: loops that exec
// cpuburn-c for about 50 ms each, and /bin/true storms. It returns how
// many processes it started.
func churn(ctx context.Context, t *testing.T, burner string, loops int) (started *atomic.Int64, wait func()) {
	started = new(atomic.Int64)
	var wg sync.WaitGroup
	for i := 0; i < loops; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				exec.Command(burner, "0.05").Run()
				started.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// A shell storm: 20 /bin/true per shell.
				exec.Command("/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do /bin/true; done").Run()
				started.Add(21)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return started, wg.Wait
}
