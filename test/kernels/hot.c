// The workload of test/kernels/run.sh: burns CPU in hot_inner, called by
// hot_outer, called by main, for argv[1] seconds (default 60). Built
// static twice: with frame pointers (the frame-pointer-only program must
// name hot_outer as hot_inner's caller: see hot_inner) and with gcc's defaults, which
// omit them at -O1 (only the unwind-table walk finds the caller).
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

// About a millisecond per call, so the few instructions of the prologue and
// epilogue (where a frame-pointer walk skips the caller) are a negligible
// share of the samples. x lives on the stack: gcc 12 gives a leaf function
// that uses no stack no frame record even with -fno-omit-frame-pointer.
__attribute__((noinline)) unsigned long hot_inner(unsigned long n)
{
	volatile unsigned long x = n;
	for (unsigned long i = 0; i < 1000000; i++)
		x = x * 6364136223846793005ul + 1442695040888963407ul;
	return x;
}

// Not a tail call: hot_outer stays on the stack while hot_inner runs.
__attribute__((noinline)) unsigned long hot_outer(unsigned long n)
{
	return hot_inner(n) + 1;
}

int main(int argc, char **argv)
{
	long secs = argc > 1 ? atol(argv[1]) : 60;
	time_t end = time(NULL) + secs;
	unsigned long n = 0;
	while (time(NULL) < end)
		sink = hot_outer(n++);
	return 0;
}
