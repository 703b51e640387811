package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"

	"github.com/scorch-profiler/scorch/internal/store"
	"github.com/scorch-profiler/scorch/internal/testenv"
)

// requireRoot is testenv.RequireRoot, by the name this package's tests
// call it.
var requireRoot = testenv.RequireRoot

// receiver is a Pyroscope push endpoint built from Pyroscope's own protocol
// definitions. fail, while set, makes it answer 503 (after reading the
// request, as a struggling server would).
type receiver struct {
	pushv1connect.UnimplementedPusherServiceHandler
	mu       sync.Mutex
	got      []pushed
	fail     atomic.Bool
	refused  atomic.Int64
	authSeen atomic.Value
}

type pushed struct {
	labels map[string]string
	prof   *profile.Profile
}

func (r *receiver) Push(ctx context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	if r.fail.Load() {
		r.refused.Add(1)
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("down for the test"))
	}
	r.authSeen.Store(req.Header().Get("X-Scope-OrgID"))
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
			raw, _ := io.ReadAll(zr)
			p, err := profile.ParseData(raw)
			if err != nil {
				return nil, connect.NewError(connect.CodeInvalidArgument, err)
			}
			r.mu.Lock()
			r.got = append(r.got, pushed{labels, p})
			r.mu.Unlock()
		}
	}
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}

func (r *receiver) windows(service string) []pushed {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []pushed
	for _, p := range r.got {
		if p.labels["service_name"] == service {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].prof.TimeNanos < out[j].prof.TimeNanos })
	return out
}

func testConfig(t *testing.T, args ...string) Config {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfg.Flags(fs)
	// Tests run several agents in one process: the first must not drop the
	// capabilities the next needs (test/reliability checks the drop).
	if err := fs.Parse(append([]string{"--drop-privileges=false"}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyEnvAndFile(fs, "", func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runAgent runs an agent until stop is closed and returns its Run error.
func runAgent(t *testing.T, cfg Config) (stop func() error) {
	t.Helper()
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitReady(t, a)
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("agent did not stop within 30s of its context ending")
			return nil
		}
	}
}

// waitReady waits until the agent samples (loading the BPF program takes
// a moment), so tests time their phases from there.
func waitReady(t *testing.T, a *Agent) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !a.ready.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func share(ps []pushed, fn string) (float64, int64) {
	var hit, all int64
	for _, p := range ps {
		for _, s := range p.prof.Sample {
			all += s.Value[0]
			for _, l := range s.Location {
				if l.Line[0].Function.Name == fn {
					hit += s.Value[0]
					break
				}
			}
		}
	}
	if all == 0 {
		return 0, 0
	}
	return float64(hit) / float64(all), all
}

// TestAgentPushesWindows runs the real agent against an in-process
// Pyroscope receiver while a testdata workload burns CPU.
func TestAgentPushesWindows(t *testing.T) {
	requireRoot(t)
	w := testenv.StartWorkload(t, "cpuburn-c")
	pid := w.Process.Pid

	rcv := &receiver{}
	url := serveReceiver(t, rcv)

	dir := t.TempDir()
	cfg := testConfig(t,
		"--interval", "2s", "--frequency", "199", "--data-dir", dir, "--listen", "127.0.0.1:0",
		"--pyroscope-url", url, "--pyroscope-tenant", "team-a",
		"--include", fmt.Sprintf("pid:%d", pid), "--service-name", fmt.Sprintf("burner=pid:%d", pid),
		"--label", "env=test")
	stop := runAgent(t, cfg)
	time.Sleep(7 * time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	ws := rcv.windows("burner")
	if len(ws) < 3 {
		t.Fatalf("got %d windows of service burner, want at least 3", len(ws))
	}
	for i, p := range ws {
		l := p.labels
		if l["__name__"] != "process_cpu" || l["env"] != "test" || l["pid"] != "" || l["hostname"] == "" {
			t.Errorf("window %d labels %v, want no pid among them", i, l)
		}
		// The pid and tid are sample labels, numeric (a Pyroscope
		// distributor makes string sample labels series labels): none is
		// left as a string.
		for _, s := range p.prof.Sample {
			if got := s.NumLabel["pid"]; len(got) != 1 || got[0] != int64(pid) || len(s.NumLabel["tid"]) != 1 || len(s.Label) != 0 {
				t.Errorf("window %d: sample labels %v %v, want pid %d, a tid and no string label", i, s.NumLabel, s.Label, pid)
				break
			}
		}
		if p.prof.DurationNanos <= 0 || p.prof.TimeNanos <= 0 {
			t.Errorf("window %d has no time: %d+%d", i, p.prof.TimeNanos, p.prof.DurationNanos)
		}
		if i > 0 {
			prev := ws[i-1].prof
			if prev.TimeNanos+prev.DurationNanos != p.prof.TimeNanos {
				t.Errorf("windows %d and %d are not contiguous: %d+%d != %d", i-1, i, prev.TimeNanos, prev.DurationNanos, p.prof.TimeNanos)
			}
			if p.prof.TimeNanos%int64(2*time.Second) != 0 {
				t.Errorf("window %d starts at %d, not at a multiple of the interval", i, p.prof.TimeNanos)
			}
		}
	}
	if got := rcv.authSeen.Load(); got != "team-a" {
		t.Errorf("tenant header %q", got)
	}
	a, n := share(ws, "hot_a")
	t.Logf("%d windows, %d samples, hot_a %.1f%%", len(ws), n, 100*a)
	if a < 0.70 || a > 0.80 {
		t.Errorf("hot_a has %.1f%% of the pushed samples, want 75%% ± 5", 100*a)
	}

	// Every window was also kept locally, and a new store over the same
	// directory (a restart) finds them.
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored, err := st.Windows(context.Background(), time.Unix(0, 0), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var mine int
	for _, sw := range stored {
		if sw.Labels["service_name"] == "burner" {
			mine++
		}
	}
	if mine != len(ws) {
		t.Errorf("store has %d windows of burner after a restart, pushed %d", mine, len(ws))
	}
}

// TestAgentSurvivesServerOutage makes the receiver refuse everything for
// several intervals: once it recovers, every window arrives exactly once.
func TestAgentSurvivesServerOutage(t *testing.T) {
	requireRoot(t)
	w := testenv.StartWorkload(t, "cpuburn-c")
	pid := w.Process.Pid

	rcv := &receiver{}
	rcv.fail.Store(true)
	url := serveReceiver(t, rcv)

	cfg := testConfig(t,
		"--interval", "1s", "--frequency", "99", "--data-dir", "", "--listen", "",
		"--pyroscope-url", url, "--queue-size", "4MiB",
		"--include", fmt.Sprintf("pid:%d", pid), "--service-name", fmt.Sprintf("burner=pid:%d", pid))
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitReady(t, a)

	time.Sleep(5 * time.Second) // about 5 windows while the server is down
	if rcv.refused.Load() == 0 {
		t.Fatalf("the agent did not try to push while the server was down: %+v", a.exp.Stats())
	}
	rcv.fail.Store(false)
	time.Sleep(4 * time.Second) // backoff is at most a few seconds here
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	st := a.exp.Stats()
	ws := rcv.windows("burner")
	seen := map[int64]bool{}
	for _, p := range ws {
		if seen[p.prof.TimeNanos] {
			t.Errorf("window at %d arrived twice", p.prof.TimeNanos)
		}
		seen[p.prof.TimeNanos] = true
	}
	for i := 1; i < len(ws); i++ {
		if ws[i-1].prof.TimeNanos+ws[i-1].prof.DurationNanos != ws[i].prof.TimeNanos {
			t.Errorf("a window is missing between %d and %d", ws[i-1].prof.TimeNanos, ws[i].prof.TimeNanos)
		}
	}
	t.Logf("refused %d pushes, then received %d windows; exporter %+v", rcv.refused.Load(), len(ws), st)
	if len(ws) < 8 {
		t.Errorf("received %d windows after the outage, want the ~9 the agent closed", len(ws))
	}
	if st.QueueBytesMax > cfg.QueueSize {
		t.Errorf("queue held %d bytes, over its bound %d", st.QueueBytesMax, cfg.QueueSize)
	}
	var dropped uint64
	for _, n := range st.Dropped {
		dropped += n
	}
	if dropped != 0 {
		t.Errorf("dropped %v windows that fit in the queue", st.Dropped)
	}
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "scorch.yaml")
	os.WriteFile(file, []byte("frequency: 49\ninterval: 30s\nlabel:\n  team: core\nexclude: [\"comm:^kworker\"]\npyroscope-url: http://file\n"), 0o600)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	env := map[string]string{
		"SCORCH_INTERVAL": "20s",
		"SCORCH_PYROSCOPE_BASIC_AUTH_PASSWORD_FILE": pw,
	}
	var cfg Config
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfg.Flags(fs)
	if err := fs.Parse([]string{"--interval", "10s"}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyEnvAndFile(fs, file, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.Interval != 10*time.Second || cfg.Frequency != 49 || cfg.PyroscopeURL != "http://file" || cfg.Labels["team"] != "core" ||
		len(cfg.Exclude) != 1 || cfg.PyroscopePassword != "s3cret" {
		t.Errorf("got %+v", cfg)
	}
	// Environment beats the file when no flag is given.
	var cfg2 Config
	fs2 := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfg2.Flags(fs2)
	fs2.Parse(nil)
	if err := cfg2.ApplyEnvAndFile(fs2, file, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg2.Interval != 20*time.Second {
		t.Errorf("interval %s, want the environment's 20s", cfg2.Interval)
	}
	// Unknown keys and bad values are errors that say where.
	os.WriteFile(file, []byte("frequncy: 49\n"), 0o600)
	var cfg3 Config
	fs3 := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfg3.Flags(fs3)
	fs3.Parse(nil)
	if err := cfg3.ApplyEnvAndFile(fs3, file, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "frequncy") {
		t.Errorf("unknown key: %v", err)
	}
	for _, bad := range [][]string{{"--include", "nope:x"}, {"--service-name", "x"}, {"--label", "__x=1"}, {"--retention-size", "lots"}, {"--exclude", "comm:("}} {
		var c Config
		f := flag.NewFlagSet("agent", flag.ContinueOnError)
		f.SetOutput(io.Discard)
		c.Flags(f)
		if err := f.Parse(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64MiB": 64 << 20, "1GiB": 1 << 30, "500MB": 500e6, "1.5KiB": 1536} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1XB"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
}

// serveReceiver serves rcv as Pyroscope's push API until the test ends and
// returns its URL.
func serveReceiver(t *testing.T, rcv *receiver) string {
	t.Helper()
	path, h := pushv1connect.NewPusherServiceHandler(rcv)
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestAgentStoresMergedWindows runs the agent over two services: each
// window is stored per service and merged (store.PutWindowMerged), and
// the merge holds exactly the services' samples, each labelled with its
// service and not with its process, and the labels they share as its own.
func TestAgentStoresMergedWindows(t *testing.T) {
	requireRoot(t)
	w1 := testenv.StartWorkload(t, "cpuburn-c")
	w2 := testenv.StartWorkload(t, "cpuburn-c")
	dir := t.TempDir()
	cfg := testConfig(t,
		"--interval", "2s", "--frequency", "99", "--data-dir", dir, "--listen", "",
		"--include", fmt.Sprintf("pid:%d", w1.Process.Pid), "--include", fmt.Sprintf("pid:%d", w2.Process.Pid),
		"--service-name", fmt.Sprintf("one=pid:%d", w1.Process.Pid), "--service-name", fmt.Sprintf("two=pid:%d", w2.Process.Pid),
		"--label", "env=test")
	stop := runAgent(t, cfg)
	time.Sleep(7 * time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	st, err := store.Open(dir, store.Options{NoRollups: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	from, to := time.Unix(0, 0), time.Now().Add(time.Hour)
	targets, err := st.Windows(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := st.MergedAt(ctx, from, to, 0)
	if err != nil {
		t.Fatal(err)
	}
	type perStart struct {
		services map[string]int64
		n        int
	}
	byStart := map[time.Time]*perStart{}
	for _, w := range targets {
		ps := byStart[w.Start]
		if ps == nil {
			ps = &perStart{services: map[string]int64{}}
			byStart[w.Start] = ps
		}
		ps.services[w.Labels["service_name"]] += w.Samples
		ps.n++
	}
	checked := 0
	for _, m := range merged {
		ps := byStart[m.Start]
		if ps == nil || ps.n < 2 {
			continue // a window with one service is its own merge
		}
		if m.Labels["env"] != "test" || m.Labels["service_name"] != "" {
			t.Errorf("merged window at %v: labels %v, want env=test and no service", m.Start, m.Labels)
		}
		p, err := st.Open(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, s := range p.Sample {
			got[strings.Join(s.Label["service_name"], ",")] += s.Value[0]
			if s.Label["env"] != nil || s.NumLabel["pid"] != nil || s.NumLabel["tid"] != nil {
				t.Errorf("merged window at %v: sample labels %v %v", m.Start, s.Label, s.NumLabel)
				break
			}
		}
		if !maps.Equal(got, ps.services) {
			t.Errorf("merged window at %v: samples by service %v, the services' windows %v", m.Start, got, ps.services)
		}
		checked++
	}
	if stats := st.Stats(); checked < 2 || stats.Merged != checked {
		t.Errorf("%d merged windows checked, %d stored (%d windows): want at least 2, all of them", checked, stats.Merged, stats.Windows)
	}
}
