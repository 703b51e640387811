// field-go: the field tests' 75/25 workload in Go, built stripped
// (-ldflags='-s -w'; see testdata/field-c/main.c for the shape):
//
//	main.main -> main.run -> main.hot_middle (3 calls per round) -> main.hot_inner
//	                      -> main.cold_path  (1 call per round)  -> main.hot_inner
//
// hot_inner, a frameless leaf without calls, does all the work, so
// hot_middle holds exactly 75% of its CPU time and cold_path 25%; which
// of a round's four calls is cold_path's is drawn at random (see
// testdata/field-c/main.c for why).
//
// Usage: field-go SECONDS [ROUNDS]. With SCORCH_FIELD_PPROF=FILE it also
// writes a runtime/pprof CPU profile of its run to FILE (asking for
// 1000 Hz: the kernel caps it at its tick rate, CONFIG_HZ), the oracle
// Scorch's shares are checked against; with SCORCH_FIELD_WORKERS=N, N
// goroutines each run the rounds (main.main one of them).
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

const chunk = 50000

var sink uint64

//go:noinline
func hot_inner(x uint64, n int) uint64 {
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

//go:noinline
func hot_middle(x uint64, n int) uint64 {
	for k := 0; k < n; k++ {
		x = hot_inner(x, chunk) + 1
	}
	return x
}

//go:noinline
func cold_path(x uint64) uint64 {
	return hot_inner(x, chunk) + 3
}

//go:noinline
func run(seconds float64, rounds int) uint64 {
	end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	x, seed := uint64(1), uint64(88172645463325252)
	for r := 0; rounds > 0 && r < rounds || rounds <= 0 && time.Now().Before(end); r++ {
		seed ^= seed << 13 // xorshift64
		seed ^= seed >> 7
		seed ^= seed << 17
		before := int(seed >> 62) // hot_inner calls before cold_path's
		x = hot_middle(x, before)
		x = cold_path(x)
		x = hot_middle(x, 3-before)
	}
	return x
}

func main() {
	seconds, rounds := 1.0, 0
	if len(os.Args) > 1 {
		seconds, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	if len(os.Args) > 2 {
		rounds, _ = strconv.Atoi(os.Args[2])
	}
	workers := 1
	if s := os.Getenv("SCORCH_FIELD_WORKERS"); s != "" {
		workers, _ = strconv.Atoi(s)
	}
	if file := os.Getenv("SCORCH_FIELD_PPROF"); file != "" {
		f, err := os.Create(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// 1000 Hz rather than pprof's 100: set first, StartCPUProfile
		// keeps it (and prints that it cannot set its own).
		runtime.SetCPUProfileRate(1000)
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}()
	}
	// The first worker is main.main itself, so its stacks reach
	// runtime.main; the others are goroutines.
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := run(seconds, rounds)
			mu.Lock()
			sink += x
			mu.Unlock()
		}()
	}
	x := run(seconds, rounds)
	wg.Wait()
	sink += x
}
