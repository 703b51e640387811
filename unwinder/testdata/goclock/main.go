// Command goclock reads the clock in a loop, for the number of seconds in
// its argument: most of its time is in time.now and runtime.nanotime1,
// which switch to the system stack to call the vDSO's clock_gettime. The
// main goroutine is locked to the main thread, so that stopping the
// process's first thread stops it.
package main

import (
	"os"
	"runtime"
	"strconv"
	"time"
)

func init() { runtime.LockOSThread() }

var sink time.Duration

//go:noinline
func clock(n int) (d time.Duration) {
	t0 := time.Now()
	for i := 0; i < n; i++ {
		d += time.Since(t0)
	}
	return d
}

func main() {
	secs, _ := strconv.Atoi(os.Args[1])
	end := time.Now().Add(time.Duration(secs) * time.Second)
	for time.Now().Before(end) {
		sink += clock(1000)
	}
}
