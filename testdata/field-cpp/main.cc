// field-cpp: the field tests' 75/25 workload in C++ (see field-c/main.c):
//
//   main -> run -> hot_middle (3 calls per round) -> hot_inner
//               -> cold_path  (1 call per round)  -> hot_inner
//
// hot_inner, a frameless leaf without calls, does all the work, so
// hot_middle holds exactly 75% of its CPU time and cold_path 25%.
//
// Usage: field-cpp SECONDS [ROUNDS]. Built with -O2 (no frame pointers).
#include <chrono>
#include <cstdlib>

#define NOINLINE __attribute__((noinline, noclone))

namespace field {

constexpr int chunk = 50000;

volatile unsigned long sink;

NOINLINE unsigned long hot_inner(unsigned long x, int n) {
	for (int i = 0; i < n; i++) {
		x = x * 6364136223846793005ul + 1442695040888963407ul;
		asm volatile("" : "+r"(x));
	}
	return x;
}

NOINLINE unsigned long hot_middle(unsigned long x) {
	for (int k = 0; k < 3; k++)
		x = hot_inner(x, chunk) + 1;
	sink += x;
	return x;
}

NOINLINE unsigned long cold_path(unsigned long x) {
	x = hot_inner(x, chunk) + 3;
	sink += x;
	return x;
}

NOINLINE unsigned long run(double seconds, long rounds) {
	using clock = std::chrono::steady_clock;
	auto end = clock::now() + std::chrono::duration<double>(seconds);
	unsigned long x = 1;
	for (long r = 0; rounds > 0 ? r < rounds : clock::now() < end; r++) {
		x = hot_middle(x);
		x = cold_path(x);
	}
	return x;
}

} // namespace field

int main(int argc, char **argv) {
	double seconds = argc > 1 ? std::atof(argv[1]) : 1;
	long rounds = argc > 2 ? std::atol(argv[2]) : 0;
	field::sink += field::run(seconds, rounds);
	return 0;
}
