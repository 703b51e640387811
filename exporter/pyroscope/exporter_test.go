package pyroscope

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
)

// received is one series as the receiver decoded it.
type received struct {
	labels map[string]string
	prof   *profile.Profile
	id     string
}

// receiver is a Pyroscope push endpoint built from Pyroscope's own protocol
// definitions. fault, if set, decides per request whether to refuse it.
type receiver struct {
	t *testing.T

	mu       sync.Mutex
	got      []received
	headers  []http.Header
	arrivals []time.Time
	fault    func(n int, req *pushv1.PushRequest) error // n counts requests from 0
	requests int
}

func (r *receiver) Push(ctx context.Context, req *connect.Request[pushv1.PushRequest]) (*connect.Response[pushv1.PushResponse], error) {
	r.mu.Lock()
	n := r.requests
	r.requests++
	r.headers = append(r.headers, req.Header().Clone())
	r.arrivals = append(r.arrivals, time.Now())
	fault := r.fault
	r.mu.Unlock()
	if fault != nil {
		if err := fault(n, req.Msg); err != nil {
			if errors.Is(err, errStall) {
				// Connect passes the client's deadline to the server, so
				// this ends as the client gives up; nothing is stored.
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, err
		}
	}
	var batch []received
	for _, s := range req.Msg.Series {
		labels := make(map[string]string)
		for _, l := range s.Labels {
			labels[l.Name] = l.Value
		}
		if len(s.Samples) != 1 {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d samples in a series", len(s.Samples)))
		}
		raw := s.Samples[0].RawProfile
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("rawProfile is not gzipped: %v", err))
		}
		pb, err := io.ReadAll(zr)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		p, err := profile.ParseUncompressed(pb)
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		batch = append(batch, received{labels: labels, prof: p, id: s.Samples[0].ID})
	}
	r.mu.Lock()
	r.got = append(r.got, batch...)
	r.mu.Unlock()
	return connect.NewResponse(&pushv1.PushResponse{}), nil
}

var errStall = errors.New("stall")

func (r *receiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) setFault(f func(int, *pushv1.PushRequest) error) {
	r.mu.Lock()
	r.fault = f
	r.mu.Unlock()
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{t: t}
	mux := http.NewServeMux()
	mux.Handle(pushv1connect.NewPusherServiceHandler(r))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return r, srv
}

// cpuProfile builds a CPU profile like the agent's: one function per seq.
func cpuProfile(seq int, start time.Time) *profile.Profile {
	fn := &profile.Function{ID: 1, Name: "fn" + strconv.Itoa(seq), SystemName: "fn" + strconv.Itoa(seq), Filename: "main.c"}
	loc := &profile.Location{ID: 1, Address: 0x1000 + uint64(seq), Line: []profile.Line{{Function: fn, Line: int64(seq)}}}
	return &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10_000_000,
		Sample:     []*profile.Sample{{Location: []*profile.Location{loc}, Value: []int64{int64(seq + 1), int64(seq+1) * 10_000_000}}},
		Location:   []*profile.Location{loc},
		Function:   []*profile.Function{fn},
	}
}

func window(seq int) Window {
	start := time.Unix(1_700_000_000+int64(seq)*10, 0)
	return Window{
		Labels:   map[string]string{"service_name": "svc", "seq": strconv.Itoa(seq)},
		Start:    start,
		Duration: 10 * time.Second,
		Profile:  cpuProfile(seq, start),
	}
}

// run starts e.Run and returns a function that stops it and waits.
func run(t *testing.T, e *Exporter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func fastConfig(url string) Config {
	return Config{URL: url, Timeout: 2 * time.Second, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, FlushTimeout: 2 * time.Second}
}

func TestPushContentAndHeaders(t *testing.T) {
	r, srv := newReceiver(t)
	cfg := fastConfig(srv.URL)
	cfg.BasicAuthUser, cfg.BasicAuthPassword = "123456", "glc_secret"
	cfg.TenantID = "tenant-a"
	cfg.Headers = map[string]string{"X-Extra": "yes"}
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := window(7)
	w.Labels["k8s.pod"] = "pod-1"
	w.Labels["empty"] = ""
	if err := e.Enqueue(w); err != nil {
		t.Fatal(err)
	}
	run(t, e)
	waitFor(t, "one window", func() bool { return len(r.received()) == 1 && e.Stats().Sent == 1 })

	got := r.received()[0]
	want := map[string]string{"__name__": "process_cpu", "service_name": "svc", "seq": "7", "k8s_pod": "pod-1"}
	if fmt.Sprint(got.labels) != fmt.Sprint(want) {
		t.Errorf("labels = %v, want %v", got.labels, want)
	}
	if len(got.id) != 36 {
		t.Errorf("sample ID %q is not a UUID", got.id)
	}
	p := got.prof
	if p.TimeNanos != w.Start.UnixNano() || p.DurationNanos != int64(10*time.Second) {
		t.Errorf("TimeNanos, DurationNanos = %d, %d; want %d, %d", p.TimeNanos, p.DurationNanos, w.Start.UnixNano(), int64(10*time.Second))
	}
	if len(p.Sample) != 1 || p.Sample[0].Value[0] != 8 || p.Sample[0].Value[1] != 80_000_000 {
		t.Fatalf("samples = %v", p.Sample)
	}
	if fn := p.Sample[0].Location[0].Line[0].Function.Name; fn != "fn7" {
		t.Errorf("function = %q, want fn7", fn)
	}
	if p.SampleType[1].Type != "cpu" || p.PeriodType.Unit != "nanoseconds" {
		t.Errorf("sample types = %v, period type %v", p.SampleType, p.PeriodType)
	}

	r.mu.Lock()
	h := r.headers[0]
	r.mu.Unlock()
	req := &http.Request{Header: h}
	if u, pw, ok := req.BasicAuth(); !ok || u != "123456" || pw != "glc_secret" {
		t.Errorf("basic auth = %q, %q, %v", u, pw, ok)
	}
	if h.Get("X-Scope-OrgID") != "tenant-a" || h.Get("X-Extra") != "yes" {
		t.Errorf("headers = %v", h)
	}
	st := e.Stats()
	if st.Sent != 1 || st.Attempts != 1 || st.SentBytes == 0 || st.QueueWindows != 0 || st.QueueBytes != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestBearerTokenAndURLUserinfo(t *testing.T) {
	r, srv := newReceiver(t)
	cfg := fastConfig(srv.URL)
	cfg.BearerToken = "tok"
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Enqueue(window(1))
	stop := run(t, e)
	waitFor(t, "window", func() bool { return len(r.received()) == 1 })
	stop()
	r.mu.Lock()
	if got := r.headers[0].Get("Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization = %q", got)
	}
	r.mu.Unlock()

	// user:password in the URL becomes basic auth and leaves the URL.
	cfg = fastConfig("http://user:pass@" + srv.Listener.Addr().String())
	e, err = New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.url != srv.URL {
		t.Errorf("url = %q, want %q", e.url, srv.URL)
	}
	e.Enqueue(window(2))
	run(t, e)
	waitFor(t, "window", func() bool { return len(r.received()) == 2 })
	r.mu.Lock()
	if u, p, _ := (&http.Request{Header: r.headers[1]}).BasicAuth(); u != "user" || p != "pass" {
		t.Errorf("basic auth from URL = %q, %q", u, p)
	}
	r.mu.Unlock()

	cfg.BearerToken = "tok"
	if _, err := New(cfg, nil); err == nil {
		t.Error("New accepted bearer token together with basic auth")
	}
}

// TestOutageAndRecovery: the receiver refuses (503, 500, 429 with
// Retry-After) and stalls while the agent keeps producing windows; after it
// recovers, the windows that fit in the queue arrive exactly once, in order,
// and the others are counted as dropped.
func TestOutageAndRecovery(t *testing.T) {
	r, srv := newReceiver(t)
	cfg := fastConfig(srv.URL)
	cfg.Timeout = 100 * time.Millisecond // a stall costs one timeout
	probe, _ := prepare(window(0))
	cfg.QueueBytes = 6 * (probe.size + 16) // about six windows
	cfg.BatchBytes = 2 * (probe.size + 16)
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, e)

	total := 0
	enqueue := func() {
		if err := e.Enqueue(window(total)); err != nil {
			t.Fatal(err)
		}
		total++
		if qb := e.Stats().QueueBytes; qb > cfg.QueueBytes {
			t.Fatalf("queue holds %d bytes, bound %d", qb, cfg.QueueBytes)
		}
	}
	for range 5 {
		enqueue()
	}
	waitFor(t, "first windows", func() bool { return len(r.received()) == 5 })

	kinds := []string{"http_503", "http_500", "http_429", "timeout"} // or the server's http_504
	r.setFault(func(n int, _ *pushv1.PushRequest) error {
		switch n % 4 {
		case 0:
			return connect.NewError(connect.CodeUnavailable, errors.New("ingester down"))
		case 1:
			return connect.NewError(connect.CodeInternal, errors.New("boom"))
		case 2:
			err := connect.NewError(connect.CodeResourceExhausted, errors.New("slow down"))
			err.Meta().Set("Retry-After", "1")
			return err
		}
		return errStall
	})
	outageStart := total
	// Produce windows every 5ms ("interval") until every kind of failure
	// was seen, and well past the queue's capacity.
	for i := 0; ; i++ {
		enqueue()
		time.Sleep(5 * time.Millisecond)
		st := e.Stats()
		seen := 0
		for _, k := range kinds {
			if st.Failures[k] > 0 || k == "timeout" && st.Failures["http_504"] > 0 {
				seen++
			}
		}
		if seen == len(kinds) && i >= 30 {
			break
		}
		if i > 5000 {
			t.Fatalf("failures never covered %v: %v", kinds, st.Failures)
		}
	}
	if n := len(r.received()); n != 5 {
		t.Fatalf("receiver stored %d windows during the outage", n-5)
	}
	r.setFault(nil)
	waitFor(t, "queue to drain", func() bool {
		st := e.Stats()
		if st.QueueWindows == 0 && st.Sent+st.Dropped["queue_full"] != uint64(total) {
			t.Fatalf("queue empty but %d windows unaccounted: %+v", total, st)
		}
		return st.QueueWindows == 0
	})

	got := r.received()
	var seqs []int
	for _, g := range got {
		s, _ := strconv.Atoi(g.labels["seq"])
		seqs = append(seqs, s)
		if fn := g.prof.Function[0].Name; fn != "fn"+g.labels["seq"] {
			t.Errorf("window %s carries %s", g.labels["seq"], fn)
		}
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("windows arrived out of order or twice: %v", seqs)
		}
	}
	// The survivors of the outage are the newest windows: a contiguous tail.
	tail := seqs[5:]
	if len(tail) == 0 || tail[len(tail)-1] != total-1 || tail[0] != total-len(tail) {
		t.Errorf("after recovery got %v, want a contiguous run ending at %d", tail, total-1)
	}
	if tail[0] <= outageStart {
		t.Errorf("no window was dropped: queue bound not exercised (%v)", tail)
	}
	st := e.Stats()
	if st.Sent != uint64(len(got)) || st.Dropped["queue_full"] != uint64(total-len(got)) {
		t.Errorf("stats sent %d dropped %v; receiver got %d of %d", st.Sent, st.Dropped, len(got), total)
	}
	if st.QueueBytesMax > cfg.QueueBytes || st.QueueBytesMax < cfg.QueueBytes/2 {
		t.Errorf("queue high-water mark %d, bound %d", st.QueueBytesMax, cfg.QueueBytes)
	}
	if st.Retries == 0 || st.Attempts <= st.Retries {
		t.Errorf("attempts %d retries %d", st.Attempts, st.Retries)
	}
	t.Logf("total %d sent %d dropped %v failures %v attempts %d retries %d queue max %d/%d",
		total, st.Sent, st.Dropped, st.Failures, st.Attempts, st.Retries, st.QueueBytesMax, cfg.QueueBytes)
}

func TestRetryAfterHonoured(t *testing.T) {
	r, srv := newReceiver(t)
	r.setFault(func(n int, _ *pushv1.PushRequest) error {
		if n == 0 {
			err := connect.NewError(connect.CodeUnavailable, errors.New("busy"))
			err.Meta().Set("Retry-After", "1")
			return err
		}
		return nil
	})
	e, err := New(fastConfig(srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Enqueue(window(1))
	run(t, e)
	waitFor(t, "window", func() bool { return e.Stats().Sent == 1 })
	r.mu.Lock()
	gap := r.arrivals[1].Sub(r.arrivals[0])
	r.mu.Unlock()
	// Backoff alone is at most 5ms; Retry-After asked for one second.
	if gap < 900*time.Millisecond {
		t.Errorf("retried after %v, server asked for 1s", gap)
	}
	if st := e.Stats(); st.Failures["http_503"] != 1 || st.Retries != 1 || st.Sent != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// logRecorder is a slog.Handler that keeps the records.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(cause string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "cause" && a.Value.String() == cause {
				n++
			}
			return true
		})
	}
	return n
}

// TestBadRequestDropped: a window the server refuses with 400 is dropped,
// counted and logged once; it does not take its batch with it, and it does
// not stop the windows after it.
func TestBadRequestDropped(t *testing.T) {
	r, srv := newReceiver(t)
	r.setFault(func(_ int, req *pushv1.PushRequest) error {
		for _, s := range req.Series {
			for _, l := range s.Labels {
				if l.Name == "bad" {
					return connect.NewError(connect.CodeInvalidArgument, errors.New("invalid labels"))
				}
			}
		}
		return nil
	})
	logs := &logRecorder{}
	cfg := fastConfig(srv.URL)
	cfg.BasicAuthPassword = "hunter2"
	e, err := New(cfg, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w := window(i)
		if i == 3 || i == 6 {
			w.Labels["bad"] = "1"
		}
		e.Enqueue(w) // all queued before Run: they go out as one batch
	}
	run(t, e)
	waitFor(t, "all windows settled", func() bool {
		st := e.Stats()
		return st.Sent+st.Dropped["http_400"] == 10
	})
	var seqs []string
	for _, g := range r.received() {
		seqs = append(seqs, g.labels["seq"])
	}
	if fmt.Sprint(seqs) != "[0 1 2 4 5 7 8 9]" {
		t.Errorf("received %v", seqs)
	}
	st := e.Stats()
	if st.Dropped["http_400"] != 2 || st.Sent != 8 || st.Retries != 0 || st.Attempts != 11 {
		t.Errorf("stats = %+v, want 2 dropped, 8 sent, 1+10 attempts", st)
	}
	if n := logs.count("http_400"); n != 1 {
		t.Errorf("logged http_400 %d times, want once", n)
	}
	logs.mu.Lock()
	for _, r := range logs.recs {
		var b bytes.Buffer
		slog.New(slog.NewTextHandler(&b, nil)).Handler().Handle(context.Background(), r)
		if bytes.Contains(b.Bytes(), []byte("hunter2")) {
			t.Errorf("log leaks the password: %s", b.String())
		}
	}
	logs.mu.Unlock()
}

func TestShutdownFlush(t *testing.T) {
	r, srv := newReceiver(t)
	e, err := New(fastConfig(srv.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.Enqueue(window(i))
	}
	// Run with a cancelled context still flushes what is queued.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.received()); n != 3 {
		t.Errorf("flush delivered %d of 3 windows", n)
	}
	if err := e.Enqueue(window(4)); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Run = %v, want ErrClosed", err)
	}
	if err := e.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}

	// A server that never recovers: Run gives up after FlushTimeout.
	r.setFault(func(int, *pushv1.PushRequest) error {
		return connect.NewError(connect.CodeUnavailable, errors.New("down"))
	})
	cfg := fastConfig(srv.URL)
	cfg.FlushTimeout = 50 * time.Millisecond
	e, _ = New(cfg, nil)
	for i := range 3 {
		e.Enqueue(window(i))
	}
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); st.Dropped["shutdown"] != 3 || st.Failures["http_503"] == 0 || st.QueueBytes != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestEnqueueRejects(t *testing.T) {
	e, err := New(Config{URL: "http://127.0.0.1:1", QueueBytes: 4096}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := window(1)
	delete(w.Labels, "service_name")
	if err := e.Enqueue(w); err == nil {
		t.Error("accepted a window without service_name")
	}
	w = window(1)
	w.Profile.Sample[0].Value = []int64{1} // two sample types, one value
	if err := e.Enqueue(w); err == nil {
		t.Error("accepted an invalid profile")
	}
	w = window(1)
	w.Start = time.Time{}
	if err := e.Enqueue(w); err == nil {
		t.Error("accepted a profile without time")
	}
	if err := e.Enqueue(Window{Labels: map[string]string{"service_name": "x"}, Raw: []byte("not gzip")}); err == nil {
		t.Error("accepted raw bytes that are not gzip")
	}
	w = window(1)
	w.Labels["a.b"], w.Labels["a_b"] = "1", "2"
	if err := e.Enqueue(w); err == nil {
		t.Error("accepted labels that collide after sanitizing")
	}
	big := window(1)
	for i := range 200 {
		big.Labels["l"+strconv.Itoa(i)] = "some value"
	}
	if err := e.Enqueue(big); err == nil {
		t.Error("accepted a window larger than the queue")
	}
	st := e.Stats()
	if st.Dropped["invalid"] != 5 || st.Dropped["too_large"] != 1 || st.Enqueued != 0 {
		t.Errorf("stats = %+v", st)
	}

	// Raw gzipped pprof is accepted.
	var buf bytes.Buffer
	p := cpuProfile(1, time.Unix(1_700_000_000, 0))
	p.TimeNanos = 1
	p.Write(&buf)
	if err := e.Enqueue(Window{Labels: map[string]string{"service_name": "x"}, Raw: buf.Bytes()}); err != nil {
		t.Errorf("raw window: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{URL: "ftp://x"},
		{URL: "http://"},
		{URL: "http://u:p@h", BasicAuthUser: "v"},
		{URL: "http://h", Headers: map[string]string{"bad header": "x"}},
		{URL: "http://h", CAFile: "/nonexistent/ca.pem"},
	} {
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	if _, err := New(Config{URL: "http://u:secret@h:%zz"}, nil); err == nil || bytes.Contains([]byte(err.Error()), []byte("secret")) {
		t.Errorf("malformed URL error = %v", err)
	}
}

// BenchmarkEnqueue measures what Enqueue costs the agent per window: a
// busy window of 2000 distinct stacks of depth 20 over 1000 locations.
func BenchmarkEnqueue(b *testing.B) {
	p := cpuProfile(0, time.Unix(1_700_000_000, 0))
	p.Sample, p.Location, p.Function = nil, nil, nil
	for i := range 1000 {
		id := uint64(i + 1)
		fn := &profile.Function{ID: id, Name: fmt.Sprintf("github.com/some/pkg.(*Type).method%d", i)}
		p.Function = append(p.Function, fn)
		p.Location = append(p.Location, &profile.Location{ID: id, Address: 0x400000 + id*16, Line: []profile.Line{{Function: fn, Line: int64(i)}}})
	}
	for i := range 2000 {
		var stack []*profile.Location
		for d := range 20 {
			stack = append(stack, p.Location[(i*7+d*131)%1000])
		}
		p.Sample = append(p.Sample, &profile.Sample{Location: stack, Value: []int64{3, 30_000_000}})
	}
	e, _ := New(Config{URL: "http://127.0.0.1:1", QueueBytes: 1 << 30}, nil)
	w := Window{Labels: map[string]string{"service_name": "svc", "pid": "1"}, Start: time.Unix(1_700_000_000, 0), Profile: p}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Enqueue(w); err != nil {
			b.Fatal(err)
		}
	}
	st := e.Stats()
	b.ReportMetric(float64(st.QueueBytes)/float64(st.QueueWindows), "queue-bytes/window")
}
