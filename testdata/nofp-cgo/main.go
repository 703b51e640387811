// nofp-cgo: a Go program that spends its time in C code compiled with
// -O2 -fomit-frame-pointer, called through cgo. Runs for argv[1] seconds
// (forever when absent or 0).
//
// Hot functions and their call chains (innermost first):
//
//	c_leaf <- c_recurse x 20 <- c_entry <- _cgo_..._Cfunc_c_entry
//	    <- runtime.asmcgocall (switches to the system stack) ... main.burn
//	    <- main.main <- runtime.main <- runtime.goexit
//
// On the system stack the C frames end at runtime.asmcgocall's frame; a
// table unwinder continues through the cgo trampoline into the goroutine
// stack only if it follows asmcgocall's saved SP.
package main

/*
#cgo CFLAGS: -O2 -g -fomit-frame-pointer
#define NOINLINE __attribute__((noinline, noclone))
volatile unsigned long c_sink;

NOINLINE static unsigned long c_leaf(unsigned long x) {
	for (int i = 0; i < 20000; i++)
		x = x * 6364136223846793005ul + 1442695040888963407ul;
	c_sink += x;
	return x;
}

NOINLINE static unsigned long c_recurse(int depth, unsigned long x) {
	volatile char pad[32];
	pad[depth % 32] = (char)depth;
	if (depth == 0)
		return c_leaf(x) + 1;
	return c_recurse(depth - 1, x + depth) * 3 + pad[depth % 32];
}

NOINLINE static unsigned long c_entry(unsigned long x) {
	return c_recurse(20, x) + 1;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

//go:noinline
func burn(x uint64) uint64 {
	return uint64(C.c_entry(C.ulong(x)))
}

func main() {
	var seconds float64
	if len(os.Args) > 1 {
		seconds, _ = strconv.ParseFloat(os.Args[1], 64)
	}
	start := time.Now()
	var acc uint64
	for seconds <= 0 || time.Since(start).Seconds() < seconds {
		acc += burn(acc)
	}
	fmt.Fprintln(os.Stderr, acc)
}
