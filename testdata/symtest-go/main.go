// symtest-go is a Go workload for symbolizer tests: hot functions, some of
// which the compiler inlines, so that stripped builds can be checked for
// names, lines and inlined frames. It spins until killed.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var sink uint64

type point struct{ x, y uint64 }

// mix is small enough to be inlined into its callers.
func mix(a, b uint64) uint64 {
	return a*0x9e3779b97f4a7c15 ^ b
}

// step is inlined too, and inlines mix: a two-level inline chain.
func step(p point) point {
	return point{mix(p.x, p.y), mix(p.y, p.x+1)}
}

//go:noinline
func hot(n int) uint64 {
	p := point{1, 2}
	for i := 0; i < n; i++ {
		p = step(p)
	}
	return p.x ^ p.y
}

//go:noinline
func (p *point) method(n int) uint64 {
	for i := 0; i < n; i++ {
		p.x = mix(p.x, uint64(i))
	}
	return p.x
}

func main() {
	var deadline time.Time
	if len(os.Args) > 1 {
		s, _ := strconv.Atoi(os.Args[1])
		deadline = time.Now().Add(time.Duration(s) * time.Second)
	}
	p := &point{3, 4}
	for {
		sink += hot(1 << 16)
		sink += p.method(1 << 16)
		if !deadline.IsZero() && time.Now().After(deadline) {
			fmt.Println(sink)
			return
		}
	}
}
