// Command dwarfsymbench measures package dwarfsym on one binary, for
// bench/symbolizer/run.sh (which compares it with addr2line and
// llvm-symbolizer on the same addresses).
//
//	dwarfsymbench -gen 20000 BIN > addrs      # sample addresses in BIN's functions
//	dwarfsymbench -print BIN < addrs          # resolve, print like addr2line -f -i -a
//	dwarfsymbench -warm 10 BIN < addrs        # time cold (Open + one pass) and warm passes
//	dwarfsymbench -addr2line OUT -llvm OUT BIN < addrs
//	                                          # % of addresses whose frames equal those tools' output
//
// It lives under symbolizer/internal so that it may import dwarfsym.
package main

import (
	"bufio"
	"debug/elf"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scorch-profiler/scorch/symbolizer/internal/dwarfsym"
)

func main() {
	gen := flag.Int("gen", 0, "print this many sample addresses of BIN's functions and exit")
	print := flag.Bool("print", false, "print the lines of each address like addr2line -f -i -a")
	warm := flag.Int("warm", 10, "warm passes over the addresses")
	a2lOut := flag.String("addr2line", "", "compare with this output of addr2line -f -i -a")
	show := flag.Int("show", 0, "with -addr2line/-llvm: print this many differing answers")
	llvmOut := flag.String("llvm", "", "compare with this output of llvm-symbolizer --no-demangle --functions=linkage")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: dwarfsymbench [-gen N | -print | -warm N] BIN < addrs")
		os.Exit(2)
	}
	bin := flag.Arg(0)
	if *gen > 0 {
		if err := genAddrs(bin, *gen); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	addrs, err := readAddrs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	start := time.Now()
	f, err := elf.Open(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	t, err := dwarfsym.Open(f, bin, "", nil)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	opened := time.Since(start)
	frames := 0
	for _, a := range addrs {
		frames += len(t.Resolve(a))
	}
	cold := time.Since(start)

	if *a2lOut != "" || *llvmOut != "" {
		for _, c := range []struct {
			name, path string
			parse      func(string, []uint64) (map[uint64][]frame, error)
		}{{"addr2line", *a2lOut, parseAddr2line}, {"llvm-symbolizer", *llvmOut, parseLLVM}} {
			if c.path == "" {
				continue
			}
			want, err := c.parse(c.path, addrs)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			same, named := 0, 0
			for _, a := range addrs {
				got := ourFrames(t.Resolve(a))
				w := want[a]
				if len(w) > 0 {
					named++
				}
				if equal(got, w) {
					same++
				} else if *show > 0 {
					*show--
					i := 0
					for i < len(w) && i < len(got) && w[i] == got[i] {
						i++
					}
					at := func(fs []frame) any {
						if i < len(fs) {
							return fs[i]
						}
						return "(none)"
					}
					fmt.Printf("0x%x: %d vs %d frames, frame %d:\n\t%s: %v\n\tdwarfsym: %v\n", a, len(w), len(got), i, c.name, at(w), at(got))
				}
			}
			fmt.Printf("%s: %d addresses, %d named by it, %d (%.2f%%) with identical frames\n",
				c.name, len(addrs), named, same, 100*float64(same)/float64(len(addrs)))
		}
		return
	}

	if *print {
		w := bufio.NewWriter(os.Stdout)
		for _, a := range addrs {
			fmt.Fprintf(w, "0x%016x\n", a)
			lines := t.Resolve(a)
			if len(lines) == 0 {
				fmt.Fprintf(w, "??\n??:0\n")
			}
			for _, l := range lines {
				file := l.File
				if file == "" {
					file = "??"
				}
				fmt.Fprintf(w, "%s\n%s:%d\n", l.Function, file, l.Line)
			}
		}
		w.Flush()
		return
	}

	wstart := time.Now()
	for i := 0; i < *warm; i++ {
		for _, a := range addrs {
			frames += len(t.Resolve(a))
		}
	}
	wdur := time.Since(wstart)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	n := float64(len(addrs))
	fmt.Printf("addresses=%d open_ms=%.1f cold_ms=%.1f cold_addr_per_s=%.0f warm_addr_per_s=%.0f warm_ns_per_addr=%.0f maxrss_kb=%d table_size_bytes=%d frames=%d\n",
		len(addrs), ms(opened), ms(cold), n/cold.Seconds(), n*float64(*warm)/wdur.Seconds(),
		float64(wdur.Nanoseconds())/(n*float64(*warm)), ru.Maxrss, t.Size(), frames)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func readAddrs() ([]uint64, error) {
	var addrs []uint64
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("address %q: %v", s, err)
		}
		addrs = append(addrs, v)
	}
	return addrs, sc.Err()
}

// genAddrs prints n addresses drawn uniformly (seeded, so reproducible)
// from the bytes of BIN's function symbols, in random order as a profiler
// would see them.
func genAddrs(bin string, n int) error {
	f, err := elf.Open(bin)
	if err != nil {
		return err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return err
	}
	var funcs []elf.Symbol
	var total uint64
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Size > 0 && s.Section != elf.SHN_UNDEF {
			funcs = append(funcs, s)
			total += s.Size
		}
	}
	if total == 0 {
		return fmt.Errorf("%s: no function symbols", bin)
	}
	sort.Slice(funcs, func(i, j int) bool { return funcs[i].Value < funcs[j].Value })
	cum := make([]uint64, len(funcs))
	var c uint64
	for i, s := range funcs {
		c += s.Size
		cum[i] = c
	}
	r := rand.New(rand.NewPCG(1, 2))
	w := bufio.NewWriter(os.Stdout)
	for i := 0; i < n; i++ {
		x := r.Uint64N(total)
		j := sort.Search(len(cum), func(j int) bool { return cum[j] > x })
		off := x - (cum[j] - funcs[j].Size)
		fmt.Fprintf(w, "0x%x\n", funcs[j].Value+off)
	}
	return w.Flush()
}

type frame struct {
	fn, file string
	line     int64
}

func ourFrames(lines []dwarfsym.Line) []frame {
	var fs []frame
	for _, l := range lines {
		fs = append(fs, frame{l.Function, cleanFile(l.File), l.Line})
	}
	return unnamed(fs)
}

// unnamed drops an answer of one frame without a line: "??", or a name
// from the ELF symbol table, which is not what is compared here.
func unnamed(fs []frame) []frame {
	if len(fs) == 1 && (fs[0].fn == "??" || fs[0].line == 0) {
		return nil
	}
	return fs
}

func cleanFile(f string) string {
	if f == "" || f == "??" {
		return ""
	}
	return filepath.Clean(f)
}

func equal(a, b []frame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// splitFileLine splits "file:line" (after dropping " (discriminator n)").
func splitFileLine(s string) (string, int64) {
	if i := strings.Index(s, " (discriminator"); i >= 0 {
		s = s[:i]
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return cleanFile(s), 0
	}
	n, _ := strconv.ParseInt(s[i+1:], 10, 64)
	return cleanFile(s[:i]), n
}

// parseAddr2line reads addr2line -f -i -a output. Answers without a line
// (names from the symbol table) count as unnamed.
func parseAddr2line(path string, _ []uint64) (map[uint64][]frame, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := map[uint64][]frame{}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var cur uint64
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "0x") && !strings.Contains(l, ":") {
			cur, _ = strconv.ParseUint(l[2:], 16, 64)
			delete(res, cur) // a repeated address: keep one answer
			continue
		}
		if i+1 >= len(lines) {
			return nil, fmt.Errorf("%s: truncated after %q", path, l)
		}
		i++
		file, line := splitFileLine(lines[i])
		res[cur] = append(res[cur], frame{l, file, line})
	}
	for a, fs := range res {
		res[a] = unnamed(fs)
	}
	return res, nil
}

var cloneSuffix = regexp.MustCompile(`(\.(isra|part|constprop|cold|lto_priv|llvm)(\.[0-9]+)?)+$`)

// parseLLVM reads llvm-symbolizer output: per address, "fn\nfile:line:col"
// per frame, then an empty line.
func parseLLVM(path string, addrs []uint64) (map[uint64][]frame, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res := map[uint64][]frame{}
	blocks := strings.Split(strings.TrimRight(string(data), "\n"), "\n\n")
	if len(blocks) != len(addrs) {
		return nil, fmt.Errorf("%s: %d answers for %d addresses", path, len(blocks), len(addrs))
	}
	for bi, b := range blocks {
		ls := strings.Split(b, "\n")
		delete(res, addrs[bi]) // a repeated address: keep one answer
		for i := 0; i+1 < len(ls); i += 2 {
			loc := ls[i+1]
			if k := strings.LastIndexByte(loc, ':'); k >= 0 {
				loc = loc[:k]
			}
			file, line := splitFileLine(loc)
			res[addrs[bi]] = append(res[addrs[bi]], frame{cloneSuffix.ReplaceAllString(ls[i], ""), file, line})
		}
		res[addrs[bi]] = unnamed(res[addrs[bi]])
	}
	return res, nil
}
