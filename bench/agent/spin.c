// spin: a fixed amount of CPU-bound integer work, for timing a workload
// with and without a profiler. Built with frame pointers so that every
// profiler sees the same short stack: main -> run -> step.
//
// Usage: spin ITERATIONS
#include <stdio.h>
#include <stdlib.h>

static volatile unsigned long sink;

__attribute__((noinline)) static unsigned long step(unsigned long x, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

__attribute__((noinline)) static void run(unsigned long iterations)
{
	unsigned long x = 1;
	for (unsigned long done = 0; done < iterations; done += 1000000)
		x = step(x, iterations - done < 1000000 ? iterations - done : 1000000);
	sink = x;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: spin ITERATIONS\n");
		return 2;
	}
	run(strtoul(argv[1], NULL, 10));
	return 0;
}
