package unwinder

import (
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/scorch-profiler/scorch/internal/testenv"
)

// compileBPF builds bpf/unwind_test.c (which includes unwind.h) for the
// host architecture.
func compileBPF(t *testing.T) string {
	t.Helper()
	clang := testenv.RequireTool(t, "clang")
	testenv.RequireTool(t, "/usr/include/bpf/bpf_helpers.h")
	arch := map[string]string{"amd64": "x86", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" {
		t.Skipf("no BPF target arch for %s", runtime.GOARCH)
	}
	out := filepath.Join(t.TempDir(), "unwind_test.o")
	cmd := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
		"-D__TARGET_ARCH_"+arch, "-I/usr/include/"+map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]+"-linux-gnu",
		"-I"+filepath.Join("..", "bpf", "src", "include"),
		"-c", filepath.Join("bpf", "unwind_test.c"), "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd, err, b)
	}
	return out
}

// TestBPFCompiles checks that unwind.h compiles with the flags the lead's
// program uses.
func TestBPFCompiles(t *testing.T) {
	obj := compileBPF(t)
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"unwind_rows", "unwind_files", "unwind_procs", "unwind_requests", "unwind_scratch"} {
		if spec.Maps[m] == nil {
			t.Errorf("map %s missing from the object", m)
		}
	}
	if got := spec.Maps["unwind_rows"].ValueSize; got != RowSize {
		t.Errorf("struct unwind_row is %d bytes in C, %d in Go", got, RowSize)
	}
	if got := spec.Maps["unwind_procs"].ValueSize; got != procValueSize {
		t.Errorf("struct unwind_proc is %d bytes in C, %d in the test", got, procValueSize)
	}
}

const (
	procMappings  = 16  // UNWIND_PROC_MAPPINGS
	maxFrames     = 128 // UNWIND_MAX_FRAMES
	procValueSize = 24 + procMappings*48
	stackOffset   = 64                                  // of struct unwind_stack in struct unwind_state
	stateSize     = stackOffset + 24 + maxFrames*8 + 72 // struct unwind_state
)

// TestBPFUnwindLive loads unwind.h into the kernel (the verifier must
// accept it), attaches it to a cpu-clock perf event on the nofp-c workload
// with tables built by Build, and checks the stacks the kernel unwinds.
func TestBPFUnwindLive(t *testing.T) {
	testenv.RequireRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("tested on amd64")
	}
	obj := compileBPF(t)
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps["unwind_rows"].MaxEntries = 1 << 18
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	defer coll.Close()

	cmd := startWorkload(t, "nofp-c")
	pid := cmd.Process.Pid
	cache := map[string]*procMapping{}
	ms := processMappings(t, pid, cache)
	slices.SortFunc(ms, func(a, b *procMapping) int { return int(int64(a.start - b.start)) })

	// Answer the walker's requests for file tables, as the sampler's table
	// worker does: upload each file's table once, then its entry.
	rows, files := coll.Maps["unwind_rows"], coll.Maps["unwind_files"]
	reqs, err := ringbuf.NewReader(coll.Maps["unwind_requests"])
	if err != nil {
		t.Fatal(err)
	}
	defer reqs.Close()
	first := map[*Table]uint32{}
	var next uint32
	answered := make(chan int, 1)
	go func() {
		n := 0
		defer func() { answered <- n }()
		for {
			rec, err := reqs.Read()
			if err != nil {
				return
			}
			key := rec.RawSample[:16] // struct unwind_file_key
			start := binary.LittleEndian.Uint64(rec.RawSample[16:])
			entry := make([]byte, 32)                    // struct unwind_file
			binary.LittleEndian.PutUint32(entry[24:], 1) // UNWIND_FILE_READY
			for _, m := range ms {
				if m.start != start {
					continue
				}
				f, ok := first[m.table]
				if !ok {
					f = next
					first[m.table] = f
					b, _ := m.table.AppendBinary(nil)
					for j := 0; j < len(b); j += RowSize {
						if err := rows.Update(next, b[j:j+RowSize], ebpf.UpdateAny); err != nil {
							t.Errorf("unwind_rows[%d]: %v", next, err)
							return
						}
						next++
					}
				}
				binary.LittleEndian.PutUint32(entry[0:], f)
				binary.LittleEndian.PutUint32(entry[4:], uint32(m.table.Stats().Rows))
				binary.LittleEndian.PutUint64(entry[8:], m.start-m.off-m.bias) // adj: ELF address - file offset
			}
			if err := files.Update(key, entry, ebpf.UpdateAny); err != nil {
				t.Errorf("unwind_files: %v", err)
				return
			}
			n++
		}
	}()
	nAnswered := -1
	defer func() {
		if nAnswered < 0 {
			reqs.Close()
			<-answered
		}
	}()
	if err := coll.Maps["unwind_test_target"].Update(uint32(0), uint32(pid), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}

	attr := unix.PerfEventAttr{
		Type:   unix.PERF_TYPE_SOFTWARE,
		Config: unix.PERF_COUNT_SW_CPU_CLOCK,
		Size:   uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Sample: 1000, // Hz
		Bits:   unix.PerfBitFreq | unix.PerfBitDisabled,
	}
	fd, err := unix.PerfEventOpen(&attr, pid, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		t.Fatalf("perf_event_open: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_SET_BPF, coll.Programs["unwind_test"].FD()); err != nil {
		t.Fatalf("PERF_EVENT_IOC_SET_BPF: %v", err)
	}
	if err := unix.IoctlSetInt(fd, unix.PERF_EVENT_IOC_ENABLE, 0); err != nil {
		t.Fatal(err)
	}
	// The first samples ask for the tables of the files they meet, one
	// new mapping per sample; give the answers time to arrive.
	time.Sleep(time.Second)

	chains := map[string][]string{
		"cmp_ints":     {"phase_sort", "run", "main", "_start"},
		"cmp_key":      {"phase_search", "run", "main", "_start"},
		"leaf_work":    {"recurse", "phase_recurse", "run", "main", "_start"},
		"handler_work": {"on_sigprof", "run", "main", "_start"},
	}
	seen := map[string]int{}
	var tableFrames, fpFrames uint32
	for i := 0; i < 30; i++ {
		time.Sleep(30 * time.Millisecond)
		st := make([]byte, stateSize)
		if err := coll.Maps["unwind_test_out"].Lookup(uint32(0), &st); err != nil {
			t.Fatal(err)
		}
		stk := st[stackOffset:]
		n := binary.LittleEndian.Uint32(stk[0:])
		if n == 0 {
			continue
		}
		stop := binary.LittleEndian.Uint32(stk[4:])
		tableFrames += binary.LittleEndian.Uint32(stk[8:])
		fpFrames += binary.LittleEndian.Uint32(stk[12:])
		names := make([]string, min(n, maxFrames))
		for j := range names {
			names[j] = symbolize(ms, binary.LittleEndian.Uint64(stk[24+8*j:]))
		}

		if stop != 1 {
			t.Errorf("unwinding stopped with reason %d, want 1 (end of stack): %v", stop, names)
		}
		seen[names[0]]++
		checkChain(t, names, chains)
		if t.Failed() {
			return
		}
	}
	reqs.Close()
	nAnswered = <-answered
	t.Logf("innermost frames seen: %v; frames by table: %d, by frame pointer: %d; file requests answered: %d", seen, tableFrames, fpFrames, nAnswered)
	if len(seen) == 0 {
		t.Fatal("the BPF program recorded no stack")
	}
	if tableFrames == 0 {
		t.Error("no frame was unwound by a table row")
	}
}
