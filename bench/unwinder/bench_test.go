// Package unwinderbench measures unwind table build time and size, and
// (kernel_test.go) the in-kernel cost of a sample with and without tables.
//
//	go test -run=^$ -bench=. -benchtime=5x ./bench/unwinder/
//
// Metrics: ns/op is the time of unwinder.Build (parse .eh_frame/.debug_frame,
// run every CFA program, compile, merge); table-B/MiB-text is the encoded
// table size per MiB of executable sections; rows and unsupported-rows are
// per table.
package unwinderbench

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/scorch-profiler/scorch/internal/testenv"
	"github.com/scorch-profiler/scorch/unwinder"
)

var (
	goBinOnce sync.Once
	goBin     string
	goBinErr  error
)

// goBinary builds cmd/scorch (a large Go binary with .debug_frame), or the
// go command when cmd/scorch does not build (it is under construction).
func goBinary(b *testing.B) string {
	return buildGo(b, &goBinOnce, &goBin, &goBinErr)
}

var (
	strippedOnce sync.Once
	strippedBin  string
	strippedErr  error
)

// goStrippedBinary is goBinary built with -ldflags='-s -w': no
// .debug_frame, no symbols; its table comes from the pclntab.
func goStrippedBinary(b *testing.B) string {
	return buildGo(b, &strippedOnce, &strippedBin, &strippedErr, "-ldflags=-s -w")
}

func buildGo(b *testing.B, once *sync.Once, goBin *string, goBinErr *error, flags ...string) string {
	once.Do(func() {
		dir, err := os.MkdirTemp("", "unwinder-bench")
		if err != nil {
			*goBinErr = err
			return
		}
		for _, pkg := range []string{"github.com/scorch-profiler/scorch/cmd/scorch", "cmd/go"} {
			*goBin = filepath.Join(dir, filepath.Base(pkg))
			out, err := exec.Command("go", append(append([]string{"build"}, flags...), "-o", *goBin, pkg)...).CombinedOutput()
			if *goBinErr = err; err == nil {
				return
			}
			b.Logf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if *goBinErr != nil {
		b.Fatalf("building a Go binary: %v", *goBinErr)
	}
	return *goBin
}

func benchBuild(b *testing.B, path string) {
	r, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	f, err := elf.NewFile(r)
	if err != nil {
		b.Fatal(err)
	}
	var t *unwinder.Table
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t, err = unwinder.Build(f, r)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s := t.Stats()
	unsupported := 0
	for _, n := range s.Unsupported {
		unsupported += n
	}
	b.ReportMetric(float64(s.Bytes)/(float64(s.TextBytes)/(1<<20)), "table-B/MiB-text")
	b.ReportMetric(float64(s.Rows), "rows")
	b.ReportMetric(float64(s.Bytes), "table-B")
	b.ReportMetric(float64(s.TextBytes), "text-B")
	b.ReportMetric(float64(unsupported), "unsupported-rows")
	b.Logf("%s: %d FDEs, %d rows, %d bytes, text %d bytes; unsupported: %s", path, s.FDEs, s.Rows, s.Bytes, s.TextBytes, s.ReasonSummary())
}

func BenchmarkBuildLibc(b *testing.B) { benchBuild(b, "/lib/x86_64-linux-gnu/libc.so.6") }

func BenchmarkBuildLibstdcxx(b *testing.B) {
	benchBuild(b, "/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
}

func BenchmarkBuildGo(b *testing.B) { benchBuild(b, goBinary(b)) }

func BenchmarkBuildGoStripped(b *testing.B) { benchBuild(b, goStrippedBinary(b)) }

func BenchmarkBuildChromium(b *testing.B) {
	testenv.RequireTool(b, "chromium")
	const p = "/usr/lib/chromium/chromium" // the ELF file behind Debian's wrapper script
	if _, err := os.Stat(p); err != nil {
		b.Fatal(err)
	}
	benchBuild(b, p)
}
