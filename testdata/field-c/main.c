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
// Which of a round's four calls is cold_path's is drawn at random, so
// that a sample landing at any point of a round is in cold_path with
// probability 1/4 whatever that point is: a sampling timer whose period
// keeps a steady phase with the rounds (or with the scheduler's ticks)
// then cannot favour one caller, and the callers of successive samples
// are independent draws, which the tests' binomial bounds assume.
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

// hot_middle makes n calls of hot_inner: 3 in a round, in two runs, one
// before cold_path's call and one after.
NOINLINE unsigned long hot_middle(unsigned long x, int n) {
	for (int k = 0; k < n; k++)
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
	unsigned long x = 1, seed = 88172645463325252ul;
	double end = now() + seconds;
	for (long r = 0; rounds > 0 ? r < rounds : now() < end; r++) {
		// xorshift64: where cold_path's call falls in the round, 0 to 3
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		int before = seed >> 62;
		x = hot_middle(x, before);
		x = cold_path(x);
		x = hot_middle(x, 3 - before);
	}
	return x;
}

int main(int argc, char **argv) {
	double seconds = argc > 1 ? atof(argv[1]) : 1;
	long rounds = argc > 2 ? atol(argv[2]) : 0;
	sink += run(seconds, rounds);
	return 0;
}
