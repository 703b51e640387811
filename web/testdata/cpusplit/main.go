// Command cpusplit burns CPU split 3:1 between two functions, burnHot and
// burnCold, while profiling itself with runtime/pprof. It records the web
// package's Go CPU profile fixture:
//
//	go run ./testdata/cpusplit -o testdata/cpusplit.pb.gz
//
// Both functions run the same loop, burnHot three times as many
// iterations, so their CPU time is 3:1 however busy the machine is.
package main

import (
	"flag"
	"log"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// The two burners run the same loop, written out in each so that each is
// the leaf of its own samples.

//go:noinline
func burnHot(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return x
}

//go:noinline
func burnCold(n int) uint64 {
	x := uint64(n)
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
		x ^= x >> 29
	}
	return x
}

var sink uint64

func main() {
	out := flag.String("o", "cpusplit.pb.gz", "output profile")
	d := flag.Duration("d", 2*time.Second, "CPU time to burn")
	hz := flag.Int("hz", 500, "sampling rate")
	flag.Parse()

	if !strings.Contains(os.Getenv("GODEBUG"), "asyncpreemptoff=1") {
		exe, err := os.Executable()
		if err != nil {
			log.Fatal(err)
		}
		env := append(os.Environ(), "GODEBUG=asyncpreemptoff=1")
		log.Fatal(syscall.Exec(exe, os.Args, env))
	}

	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	// A higher rate than pprof's 100 Hz gives enough samples in 2s for the
	// 3:1 split to show within a point or two. pprof warns that it cannot
	// set its own rate; the profile records the real one.
	runtime.SetCPUProfileRate(*hz)
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatal(err)
	}
	// The chunk varies at random so that the loop's period cannot lock to
	// the profiler's tick (on a kernel that accounts CPU time per tick, a
	// fixed period aliased with it and skewed the split by several points).
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for deadline := time.Now().Add(10 * *d); cpuTime() < *d && time.Now().Before(deadline); {
		chunk := 50000 + rng.IntN(300000)
		sink += burnHot(3 * chunk)
		sink += burnCold(chunk)
	}
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
