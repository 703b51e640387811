package agent

import (
	"net/http"
	"runtime"
	"sync"
)

// widerProcs lets the viewer's requests run on more threads than the rest
// of the agent. The agent's own work runs on one (cmd/scorch sets
// GOMAXPROCS to 1: with more, the scheduler's wakeups for its many small
// pieces of work cost more than they bring), but a request over a long
// range reads and merges hundreds of windows on several goroutines
// (web.Options.Loaders), which one thread serialises: on a 2-CPU host
// churning 100 processes a second, the flame graph of the last 15 minutes
// took a second. While at least one viewer request is in flight,
// GOMAXPROCS is raised to wide; it returns to what it was when the last
// one ends. A GOMAXPROCS at or above wide (set by the user) is left alone.
type widerProcs struct {
	wide int

	mu       sync.Mutex
	inFlight int
	restore  int // GOMAXPROCS to return to, 0 when it was not raised
}

func newWiderProcs() *widerProcs {
	return &widerProcs{wide: min(runtime.NumCPU(), 4)}
}

func (p *widerProcs) enter() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inFlight == 0 {
		if cur := runtime.GOMAXPROCS(0); cur < p.wide {
			p.restore = runtime.GOMAXPROCS(p.wide)
		}
	}
	p.inFlight++
}

func (p *widerProcs) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	if p.inFlight == 0 && p.restore != 0 {
		runtime.GOMAXPROCS(p.restore)
		p.restore = 0
	}
}

// wrap serves h with the wider GOMAXPROCS.
func (p *widerProcs) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.enter()
		defer p.leave()
		h.ServeHTTP(w, r)
	})
}
