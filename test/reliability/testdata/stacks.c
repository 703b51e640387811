// stacks: a CPU-bound workload with a very large number of distinct call
// stacks, to fill the sampler's stack and counts maps. Each step walks a
// pseudo-random path of DEPTH calls through 16 functions (16^DEPTH
// possible stacks) and spins at the bottom.
//
// Usage: stacks [seconds] [threads]
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define DEPTH 10

static volatile unsigned long sink;
typedef void (*fn)(unsigned long, int);
static fn table[16];

static void step(unsigned long r, int d)
{
	if (d == 0) {
		unsigned long x = sink;
		for (int i = 0; i < 20000; i++)
			x = x * 6364136223846793005UL + 1442695040888963407UL;
		sink = x;
		return;
	}
	table[r & 15](r >> 4 | r << 60, d - 1);
}

#define F(n) __attribute__((noinline)) static void f##n(unsigned long r, int d) { step(r, d); __asm__ volatile(""); }
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)

static double seconds;

static void *run(void *arg)
{
	unsigned long r = (unsigned long)arg * 0x9E3779B97F4A7C15UL + 1;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		r = r * 6364136223846793005UL + 1442695040888963407UL;
		step(r, DEPTH);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (seconds > 0 && (now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
			return 0;
	}
}

int main(int argc, char **argv)
{
	fn t[16] = {f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15};
	for (int i = 0; i < 16; i++)
		table[i] = t[i];
	seconds = argc > 1 ? atof(argv[1]) : 0;
	int n = argc > 2 ? atoi(argv[2]) : 2;
	pthread_t th[64];
	if (n > 64)
		n = 64;
	for (long i = 0; i < n; i++)
		pthread_create(&th[i], 0, run, (void *)(i + 1));
	for (int i = 0; i < n; i++)
		pthread_join(th[i], 0);
	return 0;
}
