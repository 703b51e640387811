// cpuburn-c: a CPU-bound workload whose split is known by construction.
//
// main -> run -> { hot_a, hot_b }: each round, hot_a does 3 units of work and
// hot_b 1 unit, so hot_a holds 75% and hot_b 25% of the samples taken in
// this process (the loop in run is negligible). Built with frame pointers,
// leaf functions included; the hot functions do the work themselves so that
// the leaf of every sample is the function whose share is asserted.
//
// A round is long (hot_a about 30 ms, hot_b 10 ms) on purpose: a sampler
// ticking every 10 ms then lands in each function in proportion to its time
// with far less scatter than independent random samples would give, so a
// few seconds at 99 Hz measure the split within a point or two.
//
// Usage: cpuburn-c [seconds]   (default: run until killed)
#include <stdlib.h>
#include <time.h>

#define UNIT 6000000

static volatile unsigned long sink;

#define SPIN(n)                                                          \
	do {                                                             \
		unsigned long x = sink;                                  \
		for (unsigned long i = 0; i < (n); i++)                  \
			x = x * 6364136223846793005UL + 1442695040888963407UL; \
		sink = x;                                                \
	} while (0)

__attribute__((noinline)) void hot_a(void) { SPIN(3 * UNIT); }
__attribute__((noinline)) void hot_b(void) { SPIN(1 * UNIT); }

__attribute__((noinline)) void run(double seconds)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		for (int i = 0; i < 1; i++) {
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
