package pyroscope

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
)

// Window is one profile of one target (a service plus labels) over one time
// window.
type Window struct {
	// Labels identify the series: service_name is required; __name__
	// defaults to "process_cpu". Labels with empty values are left out.
	Labels map[string]string
	// Start and Duration fill the profile's TimeNanos and DurationNanos
	// when those are zero. Pyroscope places the profile by TimeNanos.
	Start    time.Time
	Duration time.Duration
	// Profile is the profile to send. Enqueue serializes it before it
	// returns, without its samples' string labels (see dropStringLabels,
	// which changes the profile); during the call nothing else may use it
	// (pprof's encoder writes into the profile too).
	Profile *profile.Profile
	// Raw is an already serialized, gzipped pprof profile, used when
	// Profile is nil. It must carry its own TimeNanos.
	Raw []byte
}

// Stats counts what an Exporter did since it was created. Causes are short
// names: "http_<status>" for a refusal by the server, "network", "timeout",
// "tls", "bad_response"; drops also use "queue_full" (evicted to make room
// for newer windows), "too_large" (a window larger than the whole queue),
// "invalid" (rejected by Enqueue), "shutdown" (still queued when the flush
// time ran out) and "closed" (enqueued after Run returned).
type Stats struct {
	Enqueued  uint64 // windows accepted by Enqueue
	Attempts  uint64 // push requests made
	Retries   uint64 // push requests that repeated a failed one
	Sent      uint64 // windows acknowledged by the server
	SentBytes uint64 // gzipped pprof bytes acknowledged by the server

	Failures map[string]uint64 // failed push requests, by cause
	Dropped  map[string]uint64 // windows given up on, by cause

	QueueWindows  int   // windows held now (queued or being sent)
	QueueBytes    int64 // bytes held now, counted against Config.QueueBytes
	QueueBytesMax int64 // high-water mark of QueueBytes
}

// ErrClosed is returned by Enqueue after Run has returned.
var ErrClosed = errors.New("pyroscope: exporter is closed")

// logEvery is how often a failure of one cause is logged at most.
const logEvery = 10 * time.Minute

// An Exporter sends windows to a Pyroscope server. Enqueue may be called from
// any goroutine; Run must be called once, and it owns the only goroutine that
// talks to the server.
type Exporter struct {
	cfg      Config
	log      *slog.Logger
	hc       *http.Client
	endpoint string // the push route
	url      string // without user information; safe to log

	running atomic.Bool
	wake    chan struct{} // capacity 1: "the queue is not empty"

	mu      sync.Mutex
	q       []*item // oldest first; q[:sending] belong to the request in flight
	sending int
	bytes   int64 // total size of q
	closed  bool
	streak  int // failed attempts since the last success
	st      Stats
	lastLog map[string]time.Time
}

// item is one serialized window.
type item struct {
	series  *series
	raw     int64 // len of the gzipped pprof
	size    int64 // counted against Config.QueueBytes
	evicted bool  // removed from q to make room while in the sender's hands
	done    bool  // counted in Stats.Sent or Stats.Dropped
}

// New checks cfg and returns an Exporter. It does not contact the server.
// A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Exporter, error) {
	cfg.setDefaults()
	u, err := cfg.parseURL()
	if err != nil {
		return nil, err
	}
	hc, err := cfg.httpClient()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Exporter{
		cfg:      cfg,
		log:      logger.With("component", "pyroscope", "url", u),
		hc:       hc,
		endpoint: strings.TrimSuffix(u, "/") + pushPath,
		url:      u,
		wake:     make(chan struct{}, 1),
		lastLog:  make(map[string]time.Time),
	}
	e.st.Failures = make(map[string]uint64)
	e.st.Dropped = make(map[string]uint64)
	return e, nil
}

// Enqueue serializes w and queues it for sending. It never waits for the
// network: when the queue is full it drops the oldest windows to make room.
// It returns an error, and counts the window as dropped, if the window is
// invalid, larger than the whole queue, or the exporter is closed.
func (e *Exporter) Enqueue(w Window) error {
	it, err := prepare(w)
	cause := ""
	e.mu.Lock()
	switch {
	case err != nil:
		cause = "invalid"
	case e.closed:
		cause, err = "closed", ErrClosed
	case it.size > e.cfg.QueueBytes:
		cause = "too_large"
		err = fmt.Errorf("pyroscope: window of %d bytes is larger than the queue (%d bytes)", it.size, e.cfg.QueueBytes)
	}
	if err != nil {
		e.st.Dropped[cause]++
		e.mu.Unlock()
		e.logCause(cause, err)
		return err
	}
	evicted := 0
	for e.bytes+it.size > e.cfg.QueueBytes {
		e.evictLocked()
		evicted++
	}
	e.q = append(e.q, it)
	e.bytes += it.size
	e.st.QueueBytesMax = max(e.st.QueueBytesMax, e.bytes)
	e.st.Enqueued++
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	if evicted > 0 {
		e.logCause("queue_full", fmt.Errorf("send queue full (%d bytes): dropping the oldest windows", e.cfg.QueueBytes))
	}
	return nil
}

// evictLocked drops the oldest window. If the sender holds it, the request
// in flight is not interrupted (a slow server must not be starved by a fast
// producer): the window counts as sent if that request succeeds and is not
// retried if it fails. Its memory is released when the sender lets go, so
// memory peaks at QueueBytes plus one batch.
func (e *Exporter) evictLocked() {
	it := e.q[0]
	e.q[0] = nil
	e.q = e.q[1:]
	e.bytes -= it.size
	if e.sending > 0 {
		e.sending--
		it.evicted = true
		return
	}
	it.done = true
	e.st.Dropped["queue_full"]++
}

// Stats returns a snapshot of the counters.
func (e *Exporter) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.st
	s.Failures = maps.Clone(e.st.Failures)
	s.Dropped = maps.Clone(e.st.Dropped)
	s.QueueWindows = len(e.q)
	s.QueueBytes = e.bytes
	return s
}

// Run sends queued windows until ctx is cancelled, then keeps sending what
// is queued for at most Config.FlushTimeout, drops what is left and returns.
// After Run returns, Enqueue fails with ErrClosed. A request in flight when
// ctx is cancelled is not interrupted (within the flush time), so a window
// is not re-sent only because the agent is stopping.
func (e *Exporter) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("pyroscope: Run called more than once")
	}
	// sendCtx bounds requests: it ends FlushTimeout after ctx does.
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()
	var (
		tmu   sync.Mutex
		timer *time.Timer
	)
	stop := context.AfterFunc(ctx, func() {
		tmu.Lock()
		timer = time.AfterFunc(e.cfg.FlushTimeout, cancelSend)
		tmu.Unlock()
	})
	defer func() {
		stop()
		tmu.Lock()
		if timer != nil {
			timer.Stop()
		}
		tmu.Unlock()
	}()

	for {
		batch := e.next(ctx)
		if batch == nil || !e.deliver(ctx, sendCtx, batch) {
			break
		}
	}

	// Flush.
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	for sendCtx.Err() == nil {
		e.mu.Lock()
		batch := e.batchLocked()
		e.mu.Unlock()
		if batch == nil || !e.deliver(sendCtx, sendCtx, batch) {
			break
		}
	}
	e.mu.Lock()
	n := 0
	for _, it := range e.q {
		if !it.done {
			it.done = true
			n++
		}
	}
	e.st.Dropped["shutdown"] += uint64(n)
	e.q, e.sending, e.bytes = nil, 0, 0
	e.mu.Unlock()
	if n > 0 {
		e.log.Warn("pyroscope exporter stopped with windows unsent", "dropped", n, "flush_timeout", e.cfg.FlushTimeout)
	}
	return nil
}

// next waits for windows and returns the next batch, or nil when ctx ends.
func (e *Exporter) next(ctx context.Context) []*item {
	for {
		e.mu.Lock()
		b := e.batchLocked()
		e.mu.Unlock()
		if b != nil {
			return b
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		}
	}
}

// batchLocked returns the windows of the request in flight if a previous
// delivery was interrupted, else takes a new batch from the head of the
// queue. It returns nil if the queue is empty.
func (e *Exporter) batchLocked() []*item {
	if e.sending == 0 {
		var size int64
		for e.sending < len(e.q) {
			s := e.q[e.sending].size
			if e.sending > 0 && size+s > e.cfg.BatchBytes {
				break
			}
			size += s
			e.sending++
		}
	}
	if e.sending == 0 {
		return nil
	}
	return slices.Clone(e.q[:e.sending])
}

// deliver sends batch until the server takes it, refuses it for good, or
// all of it is evicted. Waits between retries end early when waitCtx ends;
// requests end when sendCtx ends. It reports false if it stopped early, with
// the rest of the batch still at the head of the queue.
func (e *Exporter) deliver(waitCtx, sendCtx context.Context, batch []*item) bool {
	for retry := 0; ; {
		e.mu.Lock()
		var live []*item
		for _, it := range batch {
			switch {
			case it.done:
			case it.evicted:
				it.done = true
				e.st.Dropped["queue_full"]++
			default:
				live = append(live, it)
			}
		}
		if len(live) == 0 {
			e.mu.Unlock()
			return true
		}
		actx, cancel := context.WithTimeout(sendCtx, e.cfg.Timeout)
		e.st.Attempts++
		if retry > 0 {
			e.st.Retries++
		}
		e.mu.Unlock()

		ss := make([]*series, len(live))
		for i, it := range live {
			ss[i] = it.series
		}
		a, err := push(actx, e.hc, e.endpoint, encodePushRequest(ss))
		cancel()
		o := classify(err, &a, time.Now())

		e.mu.Lock()
		if o.cause == "" {
			recovered := e.streak > 0
			e.streak = 0
			e.finishLocked(live, "")
			e.mu.Unlock()
			if recovered {
				e.logCause("recovered", nil)
			}
			return true
		}
		if sendCtx.Err() != nil {
			// Shutdown cut the request: not the server's fault.
			e.mu.Unlock()
			return false
		}
		e.st.Failures[o.cause]++
		e.streak++
		e.mu.Unlock()
		e.logCause(o.cause, err)

		if !o.retry {
			if len(live) == 1 {
				e.mu.Lock()
				e.finishLocked(live, o.cause)
				e.mu.Unlock()
				return true
			}
			// Find the bad window: send them one at a time.
			for _, it := range live {
				if !e.deliver(waitCtx, sendCtx, []*item{it}) {
					return false
				}
			}
			return true
		}
		wait := backoff(retry, e.cfg.MinBackoff, e.cfg.MaxBackoff)
		if ra := min(o.notBefore, e.cfg.MaxRetryAfter); ra > wait {
			wait = ra
		}
		retry++
		if !sleep(waitCtx, wait) {
			return false
		}
	}
}

// finishLocked counts the windows of batch not yet counted and removes them
// from the head of the queue. An empty cause means they were delivered
// (evicted ones too: the server has them).
func (e *Exporter) finishLocked(batch []*item, cause string) {
	for _, it := range batch {
		if it.done {
			continue
		}
		it.done = true
		if cause == "" {
			e.st.Sent++
			e.st.SentBytes += uint64(it.raw)
		} else {
			e.st.Dropped[cause]++
		}
		if it.evicted {
			continue // no longer in q
		}
		// Still in q[:sending], normally at q[0].
		i := slices.Index(e.q[:e.sending], it)
		if i < 0 {
			continue
		}
		copy(e.q[i:], e.q[i+1:])
		e.q[len(e.q)-1] = nil
		e.q = e.q[:len(e.q)-1]
		e.sending--
		e.bytes -= it.size
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// logCause logs err at most once per cause every logEvery. Errors never
// hold credentials: the URL has no user information and headers are not
// part of any error.
func (e *Exporter) logCause(cause string, err error) {
	now := time.Now()
	e.mu.Lock()
	last, seen := e.lastLog[cause]
	if seen && now.Sub(last) < logEvery {
		e.mu.Unlock()
		return
	}
	e.lastLog[cause] = now
	e.mu.Unlock()
	switch cause {
	case "recovered":
		e.log.Info("pyroscope upload succeeded after failures")
	case "invalid", "too_large", "closed", "queue_full":
		e.log.Warn("pyroscope window dropped", "cause", cause, "err", err, "log_every", logEvery)
	default:
		e.log.Warn("pyroscope upload failed", "cause", cause, "err", err, "log_every", logEvery)
	}
}

// prepare validates and serializes a window.
func prepare(w Window) (*item, error) {
	labels, err := seriesLabels(w.Labels)
	if err != nil {
		return nil, err
	}
	var raw []byte
	switch {
	case w.Profile != nil:
		p := w.Profile
		if p.TimeNanos == 0 && !w.Start.IsZero() {
			p.TimeNanos = w.Start.UnixNano()
		}
		if p.DurationNanos == 0 && w.Duration > 0 {
			p.DurationNanos = int64(w.Duration)
		}
		if err := checkProfile(p); err != nil {
			return nil, err
		}
		dropStringLabels(p)
		raw, err = exporter.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("pyroscope: serializing profile: %w", err)
		}
	case len(w.Raw) > 0:
		if len(w.Raw) < 2 || w.Raw[0] != 0x1f || w.Raw[1] != 0x8b {
			return nil, errors.New("pyroscope: raw profile is not gzipped")
		}
		p, err := profile.ParseData(w.Raw)
		if err != nil {
			return nil, fmt.Errorf("pyroscope: raw profile: %w", err)
		}
		if err := checkProfile(p); err != nil {
			return nil, err
		}
		raw = w.Raw
	default:
		return nil, errors.New("pyroscope: window has no profile")
	}
	size := int64(len(raw)) + 64
	for _, l := range labels {
		size += int64(len(l.name)+len(l.value)) + 16
	}
	return &item{
		series: &series{labels: labels, raw: raw, id: newUUID()},
		raw:    int64(len(raw)),
		size:   size,
	}, nil
}

// dropStringLabels removes the string labels of p's samples (comm): a
// Pyroscope distributor adds those to the series labels, a series per
// distinct value, which would undo one series per target. Numeric labels
// (pid, tid) are not series labels there and stay in the profile.
func dropStringLabels(p *profile.Profile) {
	for _, s := range p.Sample {
		s.Label = nil
	}
}

func checkProfile(p *profile.Profile) error {
	if err := p.CheckValid(); err != nil {
		return fmt.Errorf("pyroscope: invalid profile: %w", err)
	}
	if p.TimeNanos <= 0 {
		return errors.New("pyroscope: profile has no TimeNanos and the window no Start")
	}
	return nil
}

// seriesLabels turns a label map into the sorted label pairs of a series.
func seriesLabels(m map[string]string) ([]labelPair, error) {
	out := make([]labelPair, 0, len(m)+1)
	seen := make(map[string]string, len(m)+1)
	for k, v := range m {
		if v == "" {
			continue
		}
		name := sanitizeLabelName(k)
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("pyroscope: labels %q and %q both become %q", prev, k, name)
		}
		seen[name] = k
		out = append(out, labelPair{name: name, value: v})
	}
	if _, ok := seen["service_name"]; !ok {
		return nil, errors.New("pyroscope: window has no service_name label")
	}
	if _, ok := seen["__name__"]; !ok {
		out = append(out, labelPair{name: "__name__", value: "process_cpu"})
	}
	slices.SortFunc(out, func(a, b labelPair) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// sanitizeLabelName maps a name onto [a-zA-Z_][a-zA-Z0-9_]*.
func sanitizeLabelName(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

func newUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
