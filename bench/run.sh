#!/usr/bin/env bash
# bench/run.sh: benchmarks of the whole agent (issue 8), run by `make bench`
# as root after `make testdata` (it builds the agent itself, as make build
# does). It writes bench/RESULTS.md.
#
#   overhead  a fixed amount of CPU-bound work, one process per CPU, timed
#             with no profiler, with `scorch agent` at 19, 99 and 999 Hz and
#             with `perf record -g -a`, runs alternating, BENCH_REPS rounds;
#             the profiler's own CPU time and the BPF program's in-kernel
#             time per sample (kernel.bpf_stats_enabled)
#   steady    the agent's CPU and RSS over 30 s of steady state at 99 Hz
#             with one busy process per CPU
#   memory    the agent's RSS (steady and peak) while ~200 extra processes
#             made from 1, 5 and 20 distinct binaries (copies of testdata
#             programs given their own build ids) run on the host
#   scale     the agent's CPU per 1,000 samples as the workload's distinct
#             stacks grow (1k, 10k, 100k)
#   loss      samples lost by reason at 999 Hz on every CPU for BENCH_LOSS_S s
#   fresh     (issue 14) the cost to a process new to a fresh profiler: a
#             2-thread CPU-bound program of fixed work (bench/agent/fresh.c,
#             about BENCH_FRESH_S s alone, no frame pointers) started 3 s
#             after the profiler, timed with no profiler, with `scorch agent
#             --frequency 999`, with `perf record -e cpu-clock -F 999 -g
#             -a` and with bench/floor (a BPF program that does nothing on a
#             cpu-clock event per CPU: the cost of any such sampler here),
#             each started fresh for each run, BENCH_FRESH_PAIRS rounds in
#             rotating order
#   firststack (issue 14) time from a process's exec to its first complete
#             table-unwound user stack, p50 and p99 over BENCH_FS_N processes
#             of testdata/bin/nofp-c (BENCH_FS_RUN s each), measured by
#             bench/firststack (internal/sampler at 999 Hz drained every
#             10 ms), on the quiet host and with a parallel gcc loop
#             running ("busy"), for the same binary each time and for a new
#             binary each time (copies with their own build ids)
#   churn     (issue 15) the agent at 99 Hz on a churning host: one
#             CPU-bound process per CPU plus a stream of 100 new
#             short-lived processes per second (bench/agent/churn.c, each a
#             few ms of bench/agent/spin.c) for BENCH_CHURN_S (600) s: its
#             CPU and RSS after the first minute, RSS every 10 s, samples
#             lost, kernel memory of its maps
#   viewer    (issue 15) the viewer's latency on the store of a busy host's
#             day: bench/viewer writes BENCH_VIEWER_HOURS (24) hours of
#             15 s windows for 50 services through the store's write path,
#             builds the rollups, serves the store and times api/flamegraph,
#             top, labels and timeline for ranges from a minute to all time
#             and several filters, cold and warm, and the page's first
#             render in headless Chromium; the process's RSS before and
#             after serving
#
# How to run: as root, from the repo root, `make bench` (all parts), or
#
#     make build testdata
#     sudo BENCH_ONLY="fresh firststack" bench/run.sh
#
# for a subset. Sections of bench/RESULTS.md for parts not run are kept
# from the previous RESULTS.md, marked as such. Raw data: bench/out/agent/
# (not committed).
#
# Environment: BENCH_REPS (5), BENCH_WORK_S (target seconds of one overhead
# run, 10), BENCH_LOSS_S (60), BENCH_PROCS (200), BENCH_FRESH_PAIRS (9),
# BENCH_FRESH_S (1.5), BENCH_FS_N (50), BENCH_FS_RUN (0.3), BENCH_CHURN_S
# (600), BENCH_ONLY (space-separated subset of "overhead steady memory
# scale loss fresh firststack churn viewer"), BENCH_VIEWER_HOURS (24),
# BENCH_VIEWER_DIR (keep the viewer's store there, and serve the one it
# holds if any: writing a day's store takes some 13 minutes), GO (the go
# command, for firststack). Targets are reported,
# never asserted.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/bench/out/agent
RESULTS=$ROOT/bench/RESULTS.md
REPS=${BENCH_REPS:-5}
WORK_S=${BENCH_WORK_S:-10}
LOSS_S=${BENCH_LOSS_S:-60}
NPROCS=${BENCH_PROCS:-200}
FRESH_PAIRS=${BENCH_FRESH_PAIRS:-9}
FRESH_S=${BENCH_FRESH_S:-1.5}
FS_N=${BENCH_FS_N:-50}
FS_RUN=${BENCH_FS_RUN:-0.3}
ONLY=${BENCH_ONLY:-overhead steady memory scale loss fresh firststack churn viewer}
CHURN_S=${BENCH_CHURN_S:-600}
VIEWER_HOURS=${BENCH_VIEWER_HOURS:-24}
GO=${GO:-$(command -v go 2>/dev/null || echo /usr/local/go/bin/go)}
PORT=${BENCH_PORT:-17391}
NCPU=$(nproc)

# SPIN_FOREVER iterations of bench/agent/spin.c outlast any part (about a
# billion a second here: 10^16 is months); the parts kill their spinners.
# 10^11, used before, ran out after two minutes, so the churn part's "CPU-bound
# process per CPU" was gone for most of its ten.
SPIN_FOREVER=10000000000000000

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (loads BPF programs, reads other processes)"
# The agent's BPF program is found and timed with bpftool; without it a part
# would stop half-way with "command not found".
command -v bpftool >/dev/null || die "bpftool missing (Debian: apt-get install bpftool; .ci/prereqs --install installs all)"
[ -x testdata/bin/cpuburn-go ] && [ -x testdata/bin/cpuburn-c ] || die "testdata/bin missing: run make testdata"
command -v gcc >/dev/null || die "gcc missing"
command -v python3 >/dev/null || die "python3 missing"
command -v curl >/dev/null || die "curl missing"

rm -rf "$OUT"
mkdir -p "$OUT/copies"
# Our own build of the tree, as make build makes it: a copy of bin/scorch
# measured whatever that file was last built from (twice, in the churn part,
# the commit before the one RESULTS.md named), and others may rebuild it
# while we run.
make --no-print-directory build BIN="$OUT/scorch" GO="$GO" >&2 || die "make build failed (set GO)"
SCORCH=$OUT/scorch
gcc -O1 -g -fno-omit-frame-pointer -o "$OUT/spin" bench/agent/spin.c
gcc -O1 -g -fno-omit-frame-pointer -fno-optimize-sibling-calls -o "$OUT/stacks" bench/agent/stacks.c
gcc -O2 -g -fomit-frame-pointer -pthread -o "$OUT/fresh" bench/agent/fresh.c
gcc -O2 -o "$OUT/churn" bench/agent/churn.c
"$GO" build -o "$OUT/floor" ./bench/floor || die "go build ./bench/floor failed (set GO)"

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T0=$(date +%s)
# BPF run-time statistics cost every program run two clock reads: they are
# on for the overhead part only (its BPF column), never while a BPF sampler
# is compared with perf, which they do not slow.
OLD_BPF_STATS=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)

AGENT_PID=
PIDS_TO_KILL=()
BUSY_PIDS=()
cleanup() {
	stop_busy
	[ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
	for p in "${PIDS_TO_KILL[@]}"; do kill "$p" 2>/dev/null || true; done
	sysctl -qw kernel.bpf_stats_enabled="$OLD_BPF_STATS" 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }
# cpu_s PID: user+system CPU seconds of a process (all its threads).
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# metric NAME_AND_LABELS: the value of one sample of the agent's /metrics.
metric() {
	curl -sf -m 10 --retry 3 --retry-all-errors "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" 'index($0, m" ") == 1 { print $2; found = 1 } END { if (!found) print 0 }'
}
# metric_sum NAME: the sum of every sample of one metric of the agent's
# /metrics, whatever its labels.
metric_sum() {
	curl -sf -m 10 --retry 3 --retry-all-errors "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 == m || index($1, m"{") == 1 { s += $2 } END { print s + 0 }'
}
# sample_progs: "id run_time_ns run_cnt" of every loaded scorch_sample program.
sample_progs() {
	bpftool prog show 2>/dev/null | awk '
		/^[0-9]+: / { id = $1; sub(":", "", id); name = ""; for (i = 1; i <= NF; i++) if ($i == "name") name = $(i+1);
			rt = 0; rc = 0; for (i = 1; i <= NF; i++) { if ($i == "run_time_ns") rt = $(i+1); if ($i == "run_cnt") rc = $(i+1) }
			if (name == "scorch_sample") print id, rt, rc }'
}
prog_stat() { sample_progs | awk -v id="$1" '$1 == id { print $2, $3 }'; }
# agent_prog PID: the id of the scorch_sample program PID holds open (from
# the prog_id of its BPF file descriptors), "" if none.
agent_prog() {
	local ids
	ids=$(cat /proc/"$1"/fdinfo/* 2>/dev/null | awk '$1 == "prog_id:" { print $2 }' | sort -u)
	sample_progs | awk '{ print $1 }' | sort | comm -12 - <(echo "$ids") | head -1
}

# start_agent HZ: starts the agent, waits until it is profiling, and sets
# AGENT_PID and AGENT_PROG (the id of its scorch_sample program; "" if
# unknown).
start_agent() {
	local hz=$1
	rm -rf "$OUT/data"
	env ${AGENT_ENV:-} "$SCORCH" agent --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" --frequency "$hz" --interval 15s \
		--log-level warn >>"$OUT/agent.log" 2>&1 &
	AGENT_PID=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
		kill -0 "$AGENT_PID" 2>/dev/null || die "agent exited: see $OUT/agent.log"
		sleep 0.1
	done
	curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || die "agent not ready after 10 s: see $OUT/agent.log"
	AGENT_PROG=$(agent_prog "$AGENT_PID")
}
stop_agent() {
	if [ -n "$AGENT_PID" ]; then
		kill -INT "$AGENT_PID" 2>/dev/null || true
		wait "$AGENT_PID" 2>/dev/null || true
		AGENT_PID=
	fi
}

# spin_all ITER: one spin process per CPU; prints the wall seconds until
# the last one finished.
spin_all() {
	local t0 pids=()
	t0=$(now)
	for _ in $(seq "$NCPU"); do "$OUT/spin" "$1" & pids+=($!); done
	wait "${pids[@]}"
	echo "$(now) - $t0" | bc -l
}

# ---------------------------------------------------------------- overhead
OVERHEAD_ROWS=$OUT/overhead.tsv
: >"$OVERHEAD_ROWS"
run_overhead() {
	# Calibrate: iterations for WORK_S seconds of one process alone.
	local t iter
	t=$( { /usr/bin/time -f %e "$OUT/spin" 200000000 >/dev/null; } 2>&1 )
	iter=$(python3 -c "print(int(200000000 * $WORK_S / max($t, 0.01)))")
	log "overhead: $iter iterations per process (${t}s per 2e8 alone), $REPS rounds"
	echo "$iter" >"$OUT/iterations"
	local configs=(none scorch-19 scorch-99 scorch-999 perf-99)
	for rep in $(seq "$REPS"); do
		# Rotate the order each round so that no configuration always
		# follows another.
		local n=${#configs[@]} k
		for k in $(seq 0 $((n - 1))); do
			local cfg=${configs[$(((k + rep) % n))]}
			local ppid="" c0=0 bpf0="" wall c1 bpf1 cpu bpfns=""
			case $cfg in
			scorch-*)
				start_agent "${cfg#scorch-}"
				ppid=$AGENT_PID
				sleep 5 # past the start-up (tables of the host's binaries)
				;;
			perf-*)
				perf record -e cpu-clock -F "${cfg#perf-}" -g -a -o "$OUT/perf.data" >/dev/null 2>&1 &
				ppid=$!
				PIDS_TO_KILL+=("$ppid")
				sleep 3
				;;
			esac
			[ -n "$ppid" ] && c0=$(cpu_s "$ppid")
			[ -n "${AGENT_PROG:-}" ] && [ "${cfg%%-*}" = scorch ] && bpf0=$(prog_stat "$AGENT_PROG")
			wall=$(spin_all "$iter")
			cpu=""
			if [ -n "$ppid" ]; then
				c1=$(cpu_s "$ppid")
				cpu=$(echo "$c1 - $c0" | bc -l)
			fi
			if [ -n "$bpf0" ]; then
				bpf1=$(prog_stat "$AGENT_PROG")
				bpfns=$(echo "$bpf0 $bpf1" | awk '{ if ($4 > $2) printf "%.0f %d", ($3 - $1) / ($4 - $2), $4 - $2 }')
			fi
			case $cfg in
			scorch-*) stop_agent ;;
			perf-*) kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true ;;
			esac
			printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$cfg" "$wall" "${cpu:-}" "${bpfns:-}" >>"$OVERHEAD_ROWS"
			log "overhead: round $rep $cfg: ${wall}s, profiler CPU ${cpu:-0}s, BPF ${bpfns:-n/a} (ns/run runs)"
			AGENT_PROG=
		done
	done
}

# ---------------------------------------------------------------- steady
# The agent at 99 Hz over 30 s of steady state (after 15 s of start-up)
# while one CPU-bound process per CPU runs: its CPU and RSS, two window
# closes included. The overhead runs are too short for this: a fresh
# agent builds the unwind tables of the new processes during them.
STEADY_ROWS=$OUT/steady.tsv
: >"$STEADY_ROWS"
run_steady() {
	local pids=() i c0 c1 s0 s1 r hwm
	for i in $(seq "$NCPU"); do "$OUT/spin" "$SPIN_FOREVER" >/dev/null & pids+=($!); done
	PIDS_TO_KILL+=("${pids[@]}")
	start_agent 99
	sleep 15
	c0=$(cpu_s "$AGENT_PID")
	s0=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
	sleep 30
	c1=$(cpu_s "$AGENT_PID")
	s1=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
	r=$(rss_kb "$AGENT_PID" VmRSS)
	hwm=$(rss_kb "$AGENT_PID" VmHWM)
	printf '%s\t%s\t%s\t%s\n' "$(echo "$c1 - $c0" | bc -l)" "$(echo "$s1 - $s0" | bc -l)" "$r" "$hwm" >>"$STEADY_ROWS"
	log "steady: $(echo "$c1 - $c0" | bc -l) CPU s in 30 s, RSS ${r} kB (peak $hwm kB)"
	stop_agent
	for i in "${pids[@]}"; do kill "$i" 2>/dev/null || true; done
	wait "${pids[@]}" 2>/dev/null || true
}

# ---------------------------------------------------------------- memory
MEMORY_ROWS=$OUT/memory.tsv
: >"$MEMORY_ROWS"
# make_copies N: N distinct binaries, alternately Go (cpuburn-go) and C
# with DWARF (cpuburn-c), each relabelled with its own build ids.
make_copies() {
	local n=$1 i src
	rm -f "$OUT"/copies/*
	for i in $(seq "$n"); do
		if [ $((i % 2)) = 1 ]; then src=testdata/bin/cpuburn-go; else src=testdata/bin/cpuburn-c; fi
		python3 bench/agent/relabel.py "$src" "$OUT/copies/w$i-$(basename "$src")" "scorch-bench-$i"
	done
}
run_memory() {
	local distinct run
	# The last run repeats 20 binaries with a soft memory limit for the Go
	# runtime (what runtime/debug.SetMemoryLimit in the agent would do).
	for run in 1 5 20 20:GOMEMLIMIT=48MiB; do
		distinct=${run%%:*}
		AGENT_ENV=
		if [ "$run" != "$distinct" ]; then AGENT_ENV=${run#*:}; fi
		make_copies "$distinct"
		local bins=("$OUT"/copies/*)
		start_agent 99
		local rss0 pids=() i
		sleep 3
		rss0=$(rss_kb "$AGENT_PID" VmRSS)
		# NPROCS niced CPU-bound processes, spread over the binaries; each
		# runs 40 s.
		for i in $(seq "$NPROCS"); do
			nice -n 19 "${bins[$((i % ${#bins[@]}))]}" 40 >/dev/null 2>&1 &
			pids+=($!)
		done
		PIDS_TO_KILL+=("${pids[@]}")
		local peak_rss=0 r c0 c1 s0 s1
		sleep 15 # tables loaded, first windows built
		c0=$(cpu_s "$AGENT_PID")
		s0=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
		for _ in $(seq 20); do
			r=$(rss_kb "$AGENT_PID" VmRSS)
			[ "$r" -gt "$peak_rss" ] && peak_rss=$r
			sleep 1
		done
		c1=$(cpu_s "$AGENT_PID")
		s1=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
		local hwm anon file heap cache procs
		r=$(rss_kb "$AGENT_PID" VmRSS)
		hwm=$(rss_kb "$AGENT_PID" VmHWM)
		anon=$(rss_kb "$AGENT_PID" RssAnon)
		file=$(rss_kb "$AGENT_PID" RssFile)
		heap=$(metric go_memstats_heap_inuse_bytes)
		cache=$(metric scorch_symbolizer_cache_bytes)
		procs=$(pgrep -c -f "$OUT/copies/" || true)
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$distinct" "$procs" "$rss0" "$r" "$peak_rss" "$hwm" "$anon" "$file" \
			"$heap" "$cache" "$(echo "$c1 - $c0" | bc -l)" "$(echo "$s1 - $s0" | bc -l)" "${AGENT_ENV:-}" >>"$MEMORY_ROWS"
		log "memory: $distinct binaries, $procs processes: RSS ${r} kB (peak $hwm kB, anon $anon, file $file), heap $heap, cache $cache"
		for i in "${pids[@]}"; do kill "$i" 2>/dev/null || true; done
		wait "${pids[@]}" 2>/dev/null || true
		stop_agent
		AGENT_ENV=
	done
}

# ---------------------------------------------------------------- scale
SCALE_ROWS=$OUT/scale.tsv
: >"$SCALE_ROWS"
run_scale() {
	local distinct
	for distinct in 1000 10000 100000; do
		start_agent 999
		sleep 3
		local c0 c1 s0 s1 l0 l1 pids=() i
		c0=$(cpu_s "$AGENT_PID")
		s0=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
		l0=$(metric scorch_symbolizer_lookups_total)
		for i in $(seq "$NCPU"); do "$OUT/stacks" "$distinct" 20 & pids+=($!); done
		wait "${pids[@]}"
		sleep 1.5 # the last drain
		c1=$(cpu_s "$AGENT_PID")
		s1=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
		l1=$(metric scorch_symbolizer_lookups_total)
		printf '%s\t%s\t%s\t%s\n' "$distinct" "$(echo "$c1 - $c0" | bc -l)" "$(echo "$s1 - $s0" | bc -l)" "$(echo "$l1 - $l0" | bc -l)" >>"$SCALE_ROWS"
		log "scale: $distinct stacks: $(echo "$c1 - $c0" | bc -l) CPU s for $(echo "$s1 - $s0" | bc -l) samples"
		stop_agent
	done
}

# ---------------------------------------------------------------- loss
LOSS_ROWS=$OUT/loss.tsv
: >"$LOSS_ROWS"
run_loss() {
	start_agent 999
	sleep 2
	local pids=() i
	for i in $(seq "$NCPU"); do "$OUT/stacks" 100000 "$LOSS_S" & pids+=($!); done
	wait "${pids[@]}"
	sleep 1.5
	curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^scorch_(lost_total|bpf_samples_total)' >"$LOSS_ROWS" || true
	log "loss: $(tr '\n' ' ' <"$LOSS_ROWS")"
	stop_agent
}

# ---------------------------------------------------------------- fresh
# A process new to a profiler that was itself started 3 s before: the
# profiler is still loading (a fresh agent builds the unwind tables of the
# host's processes) and must build the new program's tables while it runs.
# Rounds of three runs (none, scorch-999, perf-999) in an order rotating
# between rounds; ratio = wall time with / without in the same round.
FRESH_ROWS=$OUT/fresh.tsv
: >"$FRESH_ROWS"
run_fresh() {
	# Calibrate: the fastest of 3 runs of 2e8 iterations per thread.
	local t iter
	t=$(for _ in 1 2 3; do { /usr/bin/time -f %e "$OUT/fresh" 200000000 >/dev/null; } 2>&1; done | sort -n | head -1)
	iter=$(python3 -c "print(int(200000000 * $FRESH_S / max($t, 0.01)))")
	log "fresh: $iter iterations per thread (${t}s per 2e8 alone, fastest of 3), $FRESH_PAIRS rounds"
	echo "$iter" >"$OUT/fresh-iterations"
	local configs=(none scorch-999 floor-999)
	if command -v perf >/dev/null; then configs+=(perf-999); else log "fresh: perf not installed (Debian: apt-get install linux-perf): measured without it"; fi
	for rep in $(seq "$FRESH_PAIRS"); do
		local n=${#configs[@]} k
		for k in $(seq 0 $((n - 1))); do
			local cfg=${configs[$(((k + rep) % n))]}
			local ppid="" c0=0 t0 t1 wall cpu=""
			t0=$(now)
			case $cfg in
			scorch-*)
				start_agent "${cfg#scorch-}"
				ppid=$AGENT_PID
				;;
			perf-*)
				perf record -e cpu-clock -F "${cfg#perf-}" -g -a -o "$OUT/perf-fresh.data" >/dev/null 2>&1 &
				ppid=$!
				PIDS_TO_KILL+=("$ppid")
				;;
			floor-*)
				"$OUT/floor" "${cfg#floor-}" &
				ppid=$!
				PIDS_TO_KILL+=("$ppid")
				;;
			esac
			# The workload starts 3 s after the profiler was started.
			sleep "$(echo "3 - ($(now) - $t0)" | bc -l | awk '{ print ($1 > 0) ? $1 : 0 }')"
			[ -n "$ppid" ] && c0=$(cpu_s "$ppid")
			t0=$(now)
			"$OUT/fresh" "$iter"
			t1=$(now)
			wall=$(echo "$t1 - $t0" | bc -l)
			[ -n "$ppid" ] && cpu=$(echo "$(cpu_s "$ppid") - $c0" | bc -l)
			case $cfg in
			scorch-*) stop_agent ;;
			perf-* | floor-*) kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true ;;
			esac
			printf '%s\t%s\t%s\t%s\n' "$rep" "$cfg" "$wall" "$cpu" >>"$FRESH_ROWS"
			log "fresh: round $rep $cfg: ${wall}s, profiler CPU ${cpu:-0}s"
			sleep 1
		done
	done
}

# ---------------------------------------------------------------- firststack
# busy: one gcc compile loop per CPU (a parallel build: many short-lived
# compiler processes, all CPUs taken).
start_busy() {
	local i
	for i in $(seq "$NCPU"); do
		( while :; do gcc -O2 -g -c bench/agent/stacks.c -o "$OUT/busy-$i.o"; gcc -O2 -c bench/agent/fresh.c -o "$OUT/busy-$i.o"; done ) >/dev/null 2>&1 &
		BUSY_PIDS+=($!)
	done
	sleep 2
}
stop_busy() {
	local p
	for p in "${BUSY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${BUSY_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	BUSY_PIDS=()
}
FS_SUMMARY=$OUT/firststack.txt
: >"$FS_SUMMARY"
run_firststack() {
	"$GO" build -o "$OUT/firststack" ./bench/firststack || die "go build ./bench/firststack failed (set GO)"
	rm -rf "$OUT/fscopies"
	mkdir -p "$OUT/fscopies"
	local i cond wl bins
	for i in $(seq "$FS_N"); do
		python3 bench/agent/relabel.py testdata/bin/nofp-c "$OUT/fscopies/nofp-c-$i" "scorch-firststack-$i"
	done
	for cond in quiet busy; do
		[ "$cond" = busy ] && start_busy
		for wl in same distinct; do
			if [ "$wl" = same ]; then bins=(testdata/bin/nofp-c); else bins=("$OUT"/fscopies/nofp-c-*); fi
			log "firststack: $cond, $wl binary: $FS_N processes"
			"$OUT/firststack" -n "$FS_N" -run "$FS_RUN" -label "$cond-$wl" -o "$OUT/firststack-$cond-$wl.tsv" "${bins[@]}" | tee -a "$FS_SUMMARY" >&2
		done
		[ "$cond" = busy ] && stop_busy
	done
}

# ---------------------------------------------------------------- churn
CHURN_ROWS=$OUT/churn.tsv
CHURN_RSS=$OUT/churn-rss.tsv
: >"$CHURN_ROWS"
: >"$CHURN_RSS"
run_churn() {
	local pids=() i warm=60 c0 c1 s0 s1 l0 l1 t0 t1 r hwm anon file n churner maps
	[ "$CHURN_S" -gt "$warm" ] || die "BENCH_CHURN_S must be more than $warm s"
	for i in $(seq "$NCPU"); do "$OUT/spin" "$SPIN_FOREVER" >/dev/null & pids+=($!); done
	PIDS_TO_KILL+=("${pids[@]}")
	start_agent 99
	"$OUT/churn" 100 "$CHURN_S" "$OUT/spin" 3000000 >"$OUT/churn-started" &
	churner=$!
	PIDS_TO_KILL+=("$churner")
	log "churn: 100 processes/s for $CHURN_S s"
	sleep "$warm"
	c0=$(cpu_s "$AGENT_PID")
	s0=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
	l0=$(metric_sum scorch_bpf_lost_total)
	t0=$(now)
	while kill -0 "$churner" 2>/dev/null; do
		printf '%s\t%s\n' "$(echo "$(now) - $t0 + $warm" | bc -l)" "$(rss_kb "$AGENT_PID" VmRSS)" >>"$CHURN_RSS"
		sleep 10
	done
	wait "$churner" || true
	t1=$(now)
	c1=$(cpu_s "$AGENT_PID")
	s1=$(metric 'scorch_bpf_samples_total{outcome="taken"}')
	l1=$(metric_sum scorch_bpf_lost_total)
	r=$(rss_kb "$AGENT_PID" VmRSS)
	hwm=$(rss_kb "$AGENT_PID" VmHWM)
	anon=$(rss_kb "$AGENT_PID" RssAnon)
	file=$(rss_kb "$AGENT_PID" RssFile)
	n=$(cat "$OUT/churn-started")
	maps=$(metric_sum scorch_bpf_map_bytes)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$CHURN_S" "$n" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$c1 - $c0" | bc -l)" \
		"$(echo "$s1 - $s0" | bc -l)" "$(echo "$l1 - $l0" | bc -l)" "$r" "$hwm" "$maps" "$anon" "$file" >>"$CHURN_ROWS"
	log "churn: $n processes; agent $(echo "$c1 - $c0" | bc -l) CPU s in $(echo "$t1 - $t0" | bc -l) s, RSS $r kB (peak $hwm kB), maps $maps B"
	# The viewer of the agent that ran the churn, as a user opens it.
	rm -f "$OUT/churn-page.txt"
	if command -v chromium >/dev/null; then
		"$GO" build -o "$OUT/viewer" ./bench/viewer || die "go build ./bench/viewer failed (set GO)"
		"$OUT/viewer" -page "http://127.0.0.1:$PORT/" -chromium "$(command -v chromium)" -o "$OUT/churn-page.txt" ||
			log "churn: timing the page failed"
	else
		log "churn: chromium not installed: the page is not timed"
	fi
	stop_agent
	for i in "${pids[@]}"; do kill "$i" 2>/dev/null || true; done
	wait "${pids[@]}" 2>/dev/null || true
}

# ---------------------------------------------------------------- viewer
run_viewer() {
	"$GO" build -o "$OUT/viewer" ./bench/viewer || die "go build ./bench/viewer failed (set GO)"
	local chromium=""
	command -v chromium >/dev/null && chromium=$(command -v chromium)
	local keep=()
	if [ -n "${BENCH_VIEWER_DIR:-}" ]; then
		keep=(-dir "$BENCH_VIEWER_DIR")
		[ -d "$BENCH_VIEWER_DIR" ] && [ -n "$(ls -A "$BENCH_VIEWER_DIR")" ] && keep+=(-reuse)
	fi
	log "viewer: $VIEWER_HOURS h of windows for 50 services ${keep[*]}"
	"$OUT/viewer" -hours "$VIEWER_HOURS" -chromium "$chromium" "${keep[@]}" \
		-o "$OUT/viewer.md" -tsv "$OUT/viewer.tsv" -targets "$OUT/viewer-targets.txt"
}

for part in $ONLY; do
	case $part in
	overhead)
		sysctl -qw kernel.bpf_stats_enabled=1 || log "cannot enable kernel.bpf_stats_enabled: no BPF run times"
		run_overhead
		sysctl -qw kernel.bpf_stats_enabled="$OLD_BPF_STATS" || true
		;;
	steady) run_steady ;;
	memory) run_memory ;;
	scale) run_scale ;;
	loss) run_loss ;;
	fresh) run_fresh ;;
	firststack) run_firststack ;;
	churn) run_churn ;;
	viewer) run_viewer ;;
	*) die "unknown part $part" ;;
	esac
done

ELAPSED=$(($(date +%s) - T0))
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
python3 bench/agent/report.py \
	--out "$OUT" --results "$RESULTS" --started "$STARTED" --elapsed "$ELAPSED" \
	--loadavg-start "$LOADAVG_START" --loadavg-end "$LOADAVG_END" --reps "$REPS" \
	--procs "$NPROCS" --loss-s "$LOSS_S" --ncpu "$NCPU" --parts "$ONLY" \
	--fresh-s "$FRESH_S" --fs-n "$FS_N" --fs-run "$FS_RUN"
log "wrote $RESULTS in ${ELAPSED}s"
