package dwarfsym

import (
	"os"
	"testing"
)

// benchAddrs samples addresses of a workload and opens its table.
func benchTable(b *testing.B, name string, n int) (string, []uint64) {
	b.Helper()
	bin := workload(b, name)
	if p := os.Getenv("DWARFSYM_BENCH_BIN"); p != "" {
		bin = p
	}
	addrs := sampleAddrs(b, bin, n)
	// Shuffle deterministically: profiles hit code in no particular order.
	for i := range addrs {
		j := int(uint64(i)*2654435761) % len(addrs)
		addrs[i], addrs[j] = addrs[j], addrs[i]
	}
	return bin, addrs
}

// BenchmarkResolveWarm measures lookups once every unit is loaded.
// DWARFSYM_BENCH_BIN overrides the binary (default: the Rust workload).
func BenchmarkResolveWarm(b *testing.B) {
	bin, addrs := benchTable(b, "dwarf-rust", 20000)
	tab, err := Open(openELF(b, bin), bin, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, a := range addrs {
		tab.Resolve(a)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab.Resolve(addrs[i%len(addrs)])
	}
	b.ReportMetric(float64(tab.Size()), "table-bytes")
}

// BenchmarkOpenCold measures Open plus resolving 20000 addresses (each
// unit loaded on first use), per address.
func BenchmarkOpenCold(b *testing.B) {
	bin, addrs := benchTable(b, "dwarf-rust", 20000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tab, err := Open(openELF(b, bin), bin, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		for _, a := range addrs {
			tab.Resolve(a)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(addrs)), "ns/addr")
}
