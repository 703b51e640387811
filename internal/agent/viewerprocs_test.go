package agent

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
)

// TestWiderProcs: GOMAXPROCS is wide while requests are in flight, however
// they overlap, and what it was once the last one ends; a GOMAXPROCS
// already as wide is left alone.
func TestWiderProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	p := &widerProcs{wide: 3}
	inside := make(chan int, 8)
	release := make(chan struct{})
	h := p.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		inside <- runtime.GOMAXPROCS(0)
		<-release
	}))
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		}()
	}
	for range 3 {
		if n := <-inside; n != 3 {
			t.Errorf("GOMAXPROCS %d during a request, want 3", n)
		}
	}
	close(release)
	wg.Wait()
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS %d after the requests, want 1 again", n)
	}

	runtime.GOMAXPROCS(5)
	release2 := make(chan struct{})
	h2 := p.wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		inside <- runtime.GOMAXPROCS(0)
		<-release2
	}))
	done := make(chan struct{})
	go func() { h2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)); close(done) }()
	if n := <-inside; n != 5 {
		t.Errorf("GOMAXPROCS %d during a request with 5 set, want 5 left alone", n)
	}
	close(release2)
	<-done
	if n := runtime.GOMAXPROCS(0); n != 5 {
		t.Errorf("GOMAXPROCS %d after, want 5", n)
	}
}
