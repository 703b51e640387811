// cpuburn-go: the Go twin of cpuburn-c, built stripped (-ldflags=-s -w).
//
// main.main -> main.run -> { main.hotA, main.hotB }: hotA does 3 units of
// work per round and hotB 1, so hotA holds 75% and hotB 25% of the samples
// of this process. The hot functions do the work themselves instead of
// sharing a helper: Go gives frameless leaf functions no frame pointer, so
// a frame-pointer unwinder would skip the caller of such a helper. Rounds
// are long (hotA about 30 ms, hotB 10 ms) so that periodic sampling measures
// the split with little scatter, as in cpuburn-c.
//
// Usage: cpuburn-go [seconds]   (default: run until killed)
package main

import (
	"os"
	"strconv"
	"time"
)

const unit = 6000000

var sink uint64

//go:noinline
func hotA() {
	x := sink
	for i := 0; i < 3*unit; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

//go:noinline
func hotB() {
	x := sink
	for i := 0; i < unit; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

//go:noinline
func run(d time.Duration) {
	start := time.Now()
	for {
		for i := 0; i < 1; i++ {
			hotA()
			hotB()
		}
		if d > 0 && time.Since(start) >= d {
			return
		}
	}
}

func main() {
	var d time.Duration
	if len(os.Args) > 1 {
		s, err := strconv.ParseFloat(os.Args[1], 64)
		if err != nil {
			os.Stderr.WriteString("usage: cpuburn-go [seconds]\n")
			os.Exit(2)
		}
		d = time.Duration(s * float64(time.Second))
	}
	run(d)
}
