// symtest-cpp: C++ functions with mangled names (namespaces, templates,
// overloads) for the symbolizer's demangling tests. Spins until killed.
#include <cstdlib>
#include <vector>

namespace scorch {
namespace demo {
template <typename T> struct Box {
	T v;
	__attribute__((noinline)) T spin(int n)
	{
		for (int i = 0; i < n; i++)
			v = v * 3 + T(i);
		return v;
	}
};
__attribute__((noinline)) long work(std::vector<long> &xs, int n)
{
	Box<long> b{1};
	for (long &x : xs)
		x += b.spin(n);
	return xs[0];
}
} // namespace demo
} // namespace scorch

volatile long sink;

int main(int argc, char **argv)
{
	std::vector<long> xs(16);
	for (;;)
		sink += scorch::demo::work(xs, 1000);
}
