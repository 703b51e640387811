// cpuburn-go: the Go twin of cpuburn-c, built stripped (-ldflags=-s -w).
//
// main.main -> main.run -> { main.hotA, main.hotB }: hotA does 3 units of
// work per round and hotB 1, so hotA holds 75% and hotB 25% of the samples
// of this process.
//
// Usage: cpuburn-go [seconds]   (default: run until killed)
package main

import (
	"os"
	"strconv"
	"time"
)

const unit = 200000

var sink uint64

//go:noinline
func spin(n int) {
	x := sink
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	sink = x
}

//go:noinline
func hotA() { spin(3 * unit) }

//go:noinline
func hotB() { spin(1 * unit) }

//go:noinline
func run(d time.Duration) {
	start := time.Now()
	for {
		for i := 0; i < 64; i++ {
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
