// nofp-c: a C workload built with -O2 -fomit-frame-pointer, for testing
// table-based (.eh_frame) unwinding. Runs for argv[1] seconds (forever when
// absent or 0).
//
// Hot functions and their call chains (innermost first):
//   cmp_ints     <- qsort (libc, no frame pointers) <- phase_sort   <- run <- main
//   cmp_key      <- bsearch (libc)                   <- phase_search <- run <- main
//   leaf_work    <- recurse x RECURSE_DEPTH          <- phase_recurse <- run <- main
//   handler_work <- on_sigprof <- __restore_rt (signal frame) <- <any of the above>
// SIGPROF fires every millisecond of CPU time (setitimer ITIMER_PROF).
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define NOINLINE __attribute__((noinline, noclone))
#define RECURSE_DEPTH 40
#define N 4096

volatile unsigned long sink;

NOINLINE int cmp_ints(const void *a, const void *b) {
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	// A little extra work so the comparator is hot.
	for (int i = 0; i < 8; i++) {
		x = x * 2654435761u + 1;
		y = y * 2654435761u + 1;
	}
	sink += x ^ y;
	return (*(const unsigned *)a > *(const unsigned *)b) - (*(const unsigned *)a < *(const unsigned *)b);
}

NOINLINE int cmp_key(const void *key, const void *elem) {
	unsigned k = *(const unsigned *)key, e = *(const unsigned *)elem;
	for (int i = 0; i < 16; i++)
		sink += (k ^ e) * (unsigned)i;
	return (k > e) - (k < e);
}

static unsigned data[N];

NOINLINE unsigned long phase_sort(unsigned seed) {
	for (int i = 0; i < N; i++) {
		seed = seed * 1103515245u + 12345u;
		data[i] = seed;
	}
	qsort(data, N, sizeof data[0], cmp_ints);
	return data[0] + 1;
}

NOINLINE unsigned long phase_search(void) {
	unsigned long found = 0;
	for (int i = 0; i < N; i++) {
		unsigned key = data[(i * 7) % N];
		found += bsearch(&key, data, N, sizeof data[0], cmp_key) != NULL;
	}
	return found + 1;
}

NOINLINE unsigned long leaf_work(unsigned long x) {
	for (int i = 0; i < 20000; i++)
		x = x * 6364136223846793005ul + 1442695040888963407ul;
	sink += x;
	return x;
}

NOINLINE unsigned long recurse(int depth, unsigned long x) {
	char pad[64]; // a real stack frame
	memset(pad, depth, sizeof pad);
	sink += pad[depth % 64];
	if (depth == 0)
		return leaf_work(x) + 1;
	return recurse(depth - 1, x + depth) * 3 + pad[1];
}

NOINLINE unsigned long phase_recurse(unsigned long x) {
	return recurse(RECURSE_DEPTH, x) + 7;
}

NOINLINE unsigned long handler_work(unsigned long x) {
	for (int i = 0; i < 3000; i++)
		x = x * 2862933555777941757ul + 3037000493ul;
	return x;
}

NOINLINE void on_sigprof(int sig) {
	sink += handler_work(sig) + 1;
}

NOINLINE unsigned long run(double seconds) {
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	unsigned long acc = 0;
	for (unsigned round = 1;; round++) {
		acc += phase_sort(round);
		acc += phase_search();
		acc += phase_recurse(acc);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (seconds > 0 && (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
			break;
	}
	return acc + 1;
}

int main(int argc, char **argv) {
	double seconds = argc > 1 ? atof(argv[1]) : 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigprof;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGPROF, &sa, NULL);
	struct itimerval it = {{0, 1000}, {0, 1000}};
	setitimer(ITIMER_PROF, &it, NULL);
	sink += run(seconds);
	return 0;
}
