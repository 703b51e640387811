// nofp-cpp: a C++ workload built with -O2 -fomit-frame-pointer, for testing
// table-based unwinding through libstdc++-style template code. Runs for
// argv[1] seconds (forever when absent or 0).
//
// Hot functions and their call chains (innermost first):
//   the lambda in sort_phase (operator()) <- std::sort internals
//       (std::__introsort_loop / std::__insertion_sort ...) <- sort_phase <- run <- main
//   Accumulator<double>::step <- Accumulator<double>::run <- accumulate_phase <- run <- main
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#define NOINLINE __attribute__((noinline, noclone))

volatile unsigned long sink;

template <typename T> struct Accumulator {
	T v{};
	NOINLINE T step(T x) {
		for (int i = 0; i < 64; i++)
			v = v * T(0.999) + x;
		return v;
	}
	NOINLINE T run(int n) {
		T s{};
		for (int i = 0; i < n; i++)
			s += step(T(i));
		return s + T(1);
	}
};

NOINLINE unsigned long sort_phase(unsigned seed) {
	std::vector<unsigned> v(1 << 14);
	for (auto &x : v) {
		seed = seed * 1103515245u + 12345u;
		x = seed;
	}
	std::sort(v.begin(), v.end(), [](unsigned a, unsigned b) {
		unsigned x = a, y = b;
		for (int i = 0; i < 4; i++) {
			x = x * 2654435761u + 1;
			y = y * 2654435761u + 1;
		}
		sink += x ^ y;
		return a < b;
	});
	return v[0] + 1;
}

NOINLINE double accumulate_phase() {
	Accumulator<double> acc;
	return acc.run(20000) + 1;
}

NOINLINE unsigned long run(double seconds) {
	auto start = std::chrono::steady_clock::now();
	unsigned long acc = 0;
	for (unsigned round = 1;; round++) {
		acc += sort_phase(round);
		acc += (unsigned long)accumulate_phase();
		std::chrono::duration<double> d = std::chrono::steady_clock::now() - start;
		if (seconds > 0 && d.count() >= seconds)
			break;
	}
	return acc + 1;
}

int main(int argc, char **argv) {
	double seconds = argc > 1 ? std::atof(argv[1]) : 0;
	sink += run(seconds);
	return 0;
}
