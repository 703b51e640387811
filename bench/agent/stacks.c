// stacks: CPU-bound work spread over a chosen number of distinct call
// stacks, to measure how a profiler's cost grows with stack diversity.
//
// Sixteen functions f0..f15 call one another through a table: the path of
// call i is the base-16 digits of a hash of i modulo DISTINCT, so there
// are exactly DISTINCT different chains (of the same depth, enough digits
// for DISTINCT), each ending in a short spin. Built with frame pointers
// and without sibling calls, so every level is a real frame.
//
// Usage: stacks DISTINCT SECONDS
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*fn)(unsigned long path, int depth);
static fn tab[16];
static volatile unsigned long sink;

__attribute__((noinline)) static void leaf(void)
{
	unsigned long x = sink;
	for (int i = 0; i < 20000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

#define F(k)                                                           \
	__attribute__((noinline)) static void f##k(unsigned long p, int d) \
	{                                                              \
		if (d == 0)                                            \
			leaf();                                        \
		else                                                   \
			tab[p & 15](p >> 4, d - 1);                    \
		sink++;                                                \
	}
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: stacks DISTINCT SECONDS\n");
		return 2;
	}
	unsigned long distinct = strtoul(argv[1], NULL, 10);
	double seconds = atof(argv[2]);
	if (distinct == 0)
		distinct = 1;
	fn t[16] = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15};
	for (int i = 0; i < 16; i++)
		tab[i] = t[i];
	int depth = 1;
	for (unsigned long n = 16; n < distinct; n *= 16)
		depth++;
	double end = now() + seconds;
	for (unsigned long i = 0;; i++) {
		if ((i & 63) == 0 && now() >= end)
			break;
		unsigned long p = (i * 2654435761UL) % distinct;
		tab[p & 15](p >> 4, depth);
	}
	return 0;
}
