// field-c: the field tests' C workload, with a split known by
// construction:
//
//   main -> run -> hot_middle (3 calls per round) -> hot_inner
//               -> cold_path  (1 call per round)  -> hot_inner
//
// hot_inner is a small frameless leaf that does all the work (no calls,
// no libc); each of its calls does the same work, so hot_middle holds
// exactly 75% of hot_inner's CPU time and cold_path 25%, however the
// process is scheduled (a round is never cut short).
//
// Usage: field-c SECONDS [ROUNDS]: rounds until SECONDS have passed, or
// exactly ROUNDS rounds when ROUNDS is given (SECONDS is then ignored).
// A round is about a millisecond of CPU.
//
// Built twice (build.mk): field-c with gcc's defaults (-O2: no frame
// pointers) and field-c-fp with frame pointers except in leaves.
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline, noclone))
#define CHUNK 50000 // iterations of hot_inner per call

volatile unsigned long sink;

// hot_inner: no stack frame, no calls. The asm keeps the loop (and its
// count) from being folded into a closed form.
NOINLINE unsigned long hot_inner(unsigned long x, int n) {
	for (int i = 0; i < n; i++) {
		x = x * 6364136223846793005ul + 1442695040888963407ul;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

NOINLINE unsigned long hot_middle(unsigned long x) {
	for (int k = 0; k < 3; k++)
		x = hot_inner(x, CHUNK) + 1;
	sink += x;
	return x;
}

NOINLINE unsigned long cold_path(unsigned long x) {
	x = hot_inner(x, CHUNK) + 3;
	sink += x;
	return x;
}

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

NOINLINE unsigned long run(double seconds, long rounds) {
	unsigned long x = 1;
	double end = now() + seconds;
	for (long r = 0; rounds > 0 ? r < rounds : now() < end; r++) {
		x = hot_middle(x);
		x = cold_path(x);
	}
	return x;
}

int main(int argc, char **argv) {
	double seconds = argc > 1 ? atof(argv[1]) : 1;
	long rounds = argc > 2 ? atol(argv[2]) : 0;
	sink += run(seconds, rounds);
	return 0;
}
