// depth: spins at a chosen call depth, for measuring the cost of unwinding
// one sample in the kernel. Usage: depth DEPTH SECONDS. Built twice by
// bench/unwinder: with and without frame pointers.
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline, noclone))

volatile unsigned long sink;

NOINLINE static void leaf(void) {
	for (int i = 0; i < 1000000; i++)
		sink += i;
}

// recurse calls itself depth times, then spins in leaf. The empty asm
// after the call keeps the compiler from turning the recursion into a loop.
NOINLINE static unsigned long recurse(int depth) {
	if (depth <= 0) {
		leaf();
		return 1;
	}
	unsigned long r = recurse(depth - 1);
	__asm__ volatile("" : "+r"(r));
	return r + (unsigned long)depth;
}

int main(int argc, char **argv) {
	int depth = argc > 1 ? atoi(argv[1]) : 10;
	double seconds = argc > 2 ? atof(argv[2]) : 5;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		sink += recurse(depth);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
	return 0;
}
