// cpuburn-c: a CPU-bound workload whose split is known by construction.
//
// main -> run -> { hot_a, hot_b }: each round, hot_a does 3 units of work and
// hot_b 1 unit, so hot_a holds 75% and hot_b 25% of the samples taken in
// this process (the loop in run is negligible). Built with frame pointers.
//
// Usage: cpuburn-c [seconds]   (default: run until killed)
#include <stdlib.h>
#include <time.h>

#define UNIT 200000

static volatile unsigned long sink;

__attribute__((noinline)) void spin(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
}

__attribute__((noinline)) void hot_a(void) { spin(3 * UNIT); }
__attribute__((noinline)) void hot_b(void) { spin(1 * UNIT); }

__attribute__((noinline)) void run(double seconds)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		for (int i = 0; i < 64; i++) {
			hot_a();
			hot_b();
		}
		if (seconds > 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
				return;
		}
	}
}

int main(int argc, char **argv)
{
	run(argc > 1 ? atof(argv[1]) : 0);
	return 0;
}
