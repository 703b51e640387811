// field-cpp: the field tests' 75/25 workload in C++ (see field-c/main.c):
//
//   main -> run -> hot_middle (3 calls per round) -> hot_inner
//               -> cold_path  (1 call per round)  -> hot_inner
//
// hot_inner, a frameless leaf without calls, does all the work, so
// hot_middle holds exactly 75% of its CPU time and cold_path 25%; which
// of a round's four calls is cold_path's is drawn at random (see
// field-c/main.c for why).
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

NOINLINE unsigned long hot_middle(unsigned long x, int n) {
	for (int k = 0; k < n; k++)
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
	unsigned long x = 1, seed = 88172645463325252ul;
	for (long r = 0; rounds > 0 ? r < rounds : clock::now() < end; r++) {
		seed ^= seed << 13; // xorshift64
		seed ^= seed >> 7;
		seed ^= seed << 17;
		int before = seed >> 62; // hot_inner calls before cold_path's
		x = hot_middle(x, before);
		x = cold_path(x);
		x = hot_middle(x, 3 - before);
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
