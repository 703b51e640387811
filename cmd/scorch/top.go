package main

import (
	"fmt"
	"io"

	"github.com/google/pprof/profile"

	"github.com/scorch-profiler/scorch/exporter"
)

func printTop(w io.Writer, p *profile.Profile, n int) {
	top, all := exporter.Top(p, n)
	if all == 0 {
		fmt.Fprintln(w, "no samples")
		return
	}
	fmt.Fprintf(w, "%8s %6s %8s %6s  %s\n", "self", "self%", "total", "total%", "function")
	for _, e := range top {
		fmt.Fprintf(w, "%8d %5.1f%% %8d %5.1f%%  %s\n", e.Self, 100*float64(e.Self)/float64(all), e.Total, 100*float64(e.Total)/float64(all), e.Name)
	}
}
