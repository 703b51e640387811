// Command gosplit spends 75% of its time in hot1 and 25% in hot2, both in
// calls of one frameless leaf, for the number of seconds in its argument.
// The main goroutine is locked to the main thread, so that stopping the
// process's first thread stops it.
package main

import (
	"os"
	"runtime"
	"strconv"
	"time"
)

func init() { runtime.LockOSThread() }

// leaf has no frame: Go omits it for small leaf functions, so the frame
// pointer chain skips its caller.
//
//go:noinline
func leaf(x uint64) uint64 { return x*6364136223846793005 + 1442695040888963407 }

//go:noinline
func hot1(x uint64) uint64 {
	for i := 0; i < 3000; i++ {
		x = leaf(x)
	}
	return x
}

//go:noinline
func hot2(x uint64) uint64 {
	for i := 0; i < 1000; i++ {
		x = leaf(x)
	}
	return x
}

var sink uint64

func main() {
	secs, _ := strconv.Atoi(os.Args[1])
	end := time.Now().Add(time.Duration(secs) * time.Second)
	x := uint64(1)
	for time.Now().Before(end) {
		for j := 0; j < 100; j++ {
			x = hot2(hot1(x))
		}
	}
	sink = x
}
