// dwarf-cpp: C++ with namespaces, class templates, lambdas and the standard
// library, built -O2 -g so that template code is inlined several levels deep.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <numeric>
#include <string>
#include <unordered_map>
#include <vector>

namespace scorch {
namespace geo {

template <typename T>
struct Vec3 {
	T x, y, z;
	Vec3 operator+(const Vec3 &o) const { return {x + o.x, y + o.y, z + o.z}; }
	Vec3 operator*(T k) const { return {x * k, y * k, z * k}; }
	T dot(const Vec3 &o) const { return x * o.x + y * o.y + z * o.z; }
	T norm2() const { return dot(*this); }
};

template <typename T>
class Cloud {
 public:
	void add(const Vec3<T> &p) { pts_.push_back(p); }
	Vec3<T> centroid() const {
		Vec3<T> c{0, 0, 0};
		for (const auto &p : pts_) c = c + p;
		return c * (T(1) / T(pts_.size() ? pts_.size() : 1));
	}
	T spread() const {
		Vec3<T> c = centroid();
		T s = 0;
		for (const auto &p : pts_) s += (p + c * T(-1)).norm2();
		return s;
	}
	void sort_by_norm() {
		std::sort(pts_.begin(), pts_.end(), [](const Vec3<T> &a, const Vec3<T> &b) { return a.norm2() < b.norm2(); });
	}

 private:
	std::vector<Vec3<T>> pts_;
};

}  // namespace geo

namespace text {

class Counter {
 public:
	void feed(const std::string &s) {
		std::string w;
		for (char c : s) {
			if (c == ' ') {
				flush(w);
			} else {
				w.push_back(c);
			}
		}
		flush(w);
	}
	std::vector<std::pair<std::string, int>> top(size_t n) const {
		std::vector<std::pair<std::string, int>> v(counts_.begin(), counts_.end());
		std::partial_sort(v.begin(), v.begin() + std::min(n, v.size()), v.end(),
		                  [](const auto &a, const auto &b) { return a.second > b.second || (a.second == b.second && a.first < b.first); });
		v.resize(std::min(n, v.size()));
		return v;
	}

 private:
	void flush(std::string &w) {
		if (!w.empty()) ++counts_[w];
		w.clear();
	}
	std::unordered_map<std::string, int> counts_;
};

}  // namespace text

template <typename K, typename V>
V fold(const std::map<K, V> &m) {
	return std::accumulate(m.begin(), m.end(), V{}, [](V acc, const std::pair<const K, V> &kv) { return acc + kv.second * V(kv.first % 7); });
}

}  // namespace scorch

static uint64_t rng = 88172645463325252ull;
static inline uint64_t next() {
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

__attribute__((noinline)) double run_geo(int n) {
	scorch::geo::Cloud<double> c;
	for (int i = 0; i < n; i++) c.add({double(next() % 1000), double(next() % 1000), double(next() % 1000)});
	c.sort_by_norm();
	scorch::geo::Cloud<float> f;
	for (int i = 0; i < n; i++) f.add({float(next() % 100), float(next() % 100), 1.0f});
	f.sort_by_norm();
	return c.spread() + f.spread();
}

__attribute__((noinline)) long run_text(int n) {
	scorch::text::Counter ct;
	static const char *words[] = {"alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"};
	std::string line;
	for (int i = 0; i < n; i++) {
		line += words[next() % 8];
		line += ' ';
	}
	ct.feed(line);
	long s = 0;
	for (auto &kv : ct.top(5)) s += kv.second * long(kv.first.size());
	return s;
}

__attribute__((noinline)) long run_map(int n) {
	std::map<int, long> m;
	for (int i = 0; i < n; i++) m[int(next() % 512)] += i;
	return scorch::fold(m);
}

int main(int argc, char **argv) {
	int rounds = argc > 1 ? std::atoi(argv[1]) : 50;
	double acc = 0;
	for (int i = 0; i < rounds; i++) acc += run_geo(2000) + double(run_text(2000)) + double(run_map(5000));
	std::printf("%f\n", acc);
	return 0;
}
