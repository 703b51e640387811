// fresh: a fixed amount of CPU-bound work split over two threads, for
// timing a process that is new to the profiler (bench/run.sh, part
// "fresh"). Built without frame pointers (-O2 -fomit-frame-pointer), so
// that a table-walking profiler has to build this file's unwind tables
// (and libc's) while it runs, as it would for any new program:
// thread_main -> run -> mix -> step, and main -> run -> ... in the other.
//
// Usage: fresh ITERATIONS (per thread)
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile unsigned long sink;

__attribute__((noinline)) static unsigned long step(unsigned long x, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}

__attribute__((noinline)) static unsigned long mix(unsigned long x, unsigned long n)
{
	return step(x ^ (x >> 17), n) + 1;
}

__attribute__((noinline)) static void run(unsigned long iterations)
{
	unsigned long x = 1;
	for (unsigned long done = 0; done < iterations; done += 1000000)
		x = mix(x, iterations - done < 1000000 ? iterations - done : 1000000);
	sink += x;
}

static unsigned long iterations;

static void *thread_main(void *arg)
{
	(void)arg;
	run(iterations);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fresh ITERATIONS\n");
		return 2;
	}
	iterations = strtoul(argv[1], NULL, 10);
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL) != 0) {
		fprintf(stderr, "fresh: pthread_create failed\n");
		return 1;
	}
	run(iterations);
	pthread_join(t, NULL);
	return 0;
}
