package symbolizer

import (
	"strings"
	"sync"
	"testing"
)

// benchResolve measures warm ResolveUser lookups over addresses sampled in
// every function of a running workload.
func benchResolve(b *testing.B, bin, twin string) {
	cmd := start(b, bin)
	pid := cmd.Process.Pid
	vaddrs, _ := funcAddrs(b, twin, 16, nil)
	addrs := runtimeAddrsAs(b, pid, twin, baseName(bin), vaddrs)
	s := New(Options{})
	defer s.Close()
	for _, a := range addrs {
		s.ResolveUser(uint32(pid), a)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.ResolveUser(uint32(pid), addrs[i%len(addrs)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// BenchmarkResolveUserSymtab: a C binary with only symbol tables.
func BenchmarkResolveUserSymtab(b *testing.B) {
	bin := workload(b, "symtest-c-nodebug")
	benchResolve(b, bin, bin)
}

// BenchmarkResolveUserDWARF: the same C binary with DWARF.
func BenchmarkResolveUserDWARF(b *testing.B) {
	bin := workload(b, "symtest-c")
	benchResolve(b, bin, bin)
}

// BenchmarkResolveUserGopclntab: a stripped Go binary.
func BenchmarkResolveUserGopclntab(b *testing.B) {
	benchResolve(b, workload(b, "symtest-go-stripped"), workload(b, "symtest-go"))
}

// TestConcurrent resolves, observes and forgets from several goroutines
// (run with -race).
func TestConcurrent(t *testing.T) {
	bin := workload(t, "symtest-c")
	cmd := start(t, bin)
	pid := cmd.Process.Pid
	// sfn_N are folded into gfn_N (identical code): skip the aliases.
	vaddrs, names := funcAddrs(t, bin, 64, func(n string) bool { return !strings.HasPrefix(n, "sfn_") })
	addrs := runtimeAddrs(t, pid, bin, vaddrs)
	s := New(Options{CacheBytes: 1 << 10}) // force evictions and reloads
	defer s.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < len(addrs); i += 2 {
				fr := s.ResolveUser(uint32(pid), addrs[i])
				if got := fr.Lines[len(fr.Lines)-1].Function; got != names[i] && fr.Lines[0].Function != names[i] {
					t.Errorf("%#x: %+v, want %s", vaddrs[i], fr.Lines, names[i])
					return
				}
				if i%50 == 0 {
					s.ResolveKernel(0)
					s.Stats()
				}
			}
		}(g)
	}
	wg.Wait()
	s.Forget(uint32(pid))
}
