// symtest-c: many small functions of varied sizes, global and static, for
// comparing the symbolizer's ELF symbol tables with addr2line. It spins in
// its functions until killed (or for argv[1] seconds).
#include <stdlib.h>
#include <time.h>

volatile unsigned long sink;

#define BODY(n)                                                     \
	{                                                           \
		unsigned long v = x;                                \
		for (int i = 0; i < (n % 7) + 1; i++)               \
			v = v * 2654435761u + (unsigned long)i + n; \
		if (v % (n + 3) == 1)                               \
			sink += v;                                  \
		return v ^ (n);                                     \
	}
#define G(n) __attribute__((noinline)) unsigned long gfn_##n(unsigned long x) BODY(n)
#define S(n) __attribute__((noinline)) static unsigned long sfn_##n(unsigned long x) BODY(n)
#define G10(a) G(a##0) G(a##1) G(a##2) G(a##3) G(a##4) G(a##5) G(a##6) G(a##7) G(a##8) G(a##9)
#define S10(a) S(a##0) S(a##1) S(a##2) S(a##3) S(a##4) S(a##5) S(a##6) S(a##7) S(a##8) S(a##9)
#define C(p, n) v = p##fn_##n(v);
#define C10(p, a) C(p, a##0) C(p, a##1) C(p, a##2) C(p, a##3) C(p, a##4) C(p, a##5) C(p, a##6) C(p, a##7) C(p, a##8) C(p, a##9)

G10(1) G10(2) G10(3) G10(4) G10(5) G10(6) G10(7) G10(8) G10(9)
S10(1) S10(2) S10(3) S10(4) S10(5) S10(6) S10(7) S10(8) S10(9)

__attribute__((noinline)) unsigned long round_all(unsigned long v)
{
	C10(g, 1) C10(g, 2) C10(g, 3) C10(g, 4) C10(g, 5) C10(g, 6) C10(g, 7) C10(g, 8) C10(g, 9)
	C10(s, 1) C10(s, 2) C10(s, 3) C10(s, 4) C10(s, 5) C10(s, 6) C10(s, 7) C10(s, 8) C10(s, 9)
	return v;
}

int main(int argc, char **argv)
{
	time_t end = argc > 1 ? time(NULL) + atoi(argv[1]) : 0;
	unsigned long v = 1;
	for (;;) {
		for (int i = 0; i < 1000; i++)
			v = round_all(v);
		sink += v;
		if (end && time(NULL) >= end)
			return 0;
	}
}
