// dwarf-c: a small CPU-bound C program whose hot paths are built from
// several levels of static inline helpers, so that -O2 -g produces deep
// DW_TAG_inlined_subroutine chains for the DWARF symbolizer tests.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static inline uint32_t mix(uint32_t x) {
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	return x ^ (x >> 16);
}

static inline uint32_t mix2(uint32_t a, uint32_t b) { return mix(a) + rotl(mix(b ^ 0x9e3779b9U), 7); }

static inline uint32_t step(uint32_t *s) {
	*s = mix2(*s, *s + 1);
	return *s;
}

static inline int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static inline int score(const char *p, size_t n, uint32_t *seed) {
	int acc = 0;
	for (size_t i = 0; i < n; i++) {
		acc += clamp((int)(p[i] ^ (char)step(seed)), -40, 90);
	}
	return acc;
}

struct bucket {
	uint32_t key;
	uint32_t val;
};

static inline size_t slot(uint32_t key, size_t cap) { return mix(key) & (cap - 1); }

static inline void put(struct bucket *t, size_t cap, uint32_t key, uint32_t val) {
	size_t i = slot(key, cap);
	while (t[i].key != 0 && t[i].key != key) i = (i + 1) & (cap - 1);
	t[i].key = key;
	t[i].val += val;
}

static inline uint32_t get(const struct bucket *t, size_t cap, uint32_t key) {
	size_t i = slot(key, cap);
	while (t[i].key != 0) {
		if (t[i].key == key) return t[i].val;
		i = (i + 1) & (cap - 1);
	}
	return 0;
}

__attribute__((noinline)) uint32_t hash_workload(uint32_t seed, int rounds) {
	enum { CAP = 1 << 12 };
	static struct bucket table[CAP];
	memset(table, 0, sizeof table);
	uint32_t sum = 0;
	for (int r = 0; r < rounds; r++) {
		uint32_t k = (step(&seed) % 3000) + 1;
		put(table, CAP, k, r);
		sum += get(table, CAP, (step(&seed) % 3000) + 1);
	}
	return sum;
}

static inline void swap(int *a, int *b) {
	int t = *a;
	*a = *b;
	*b = t;
}

static inline int median3(int *v, int lo, int hi) {
	int mid = lo + (hi - lo) / 2;
	if (v[mid] < v[lo]) swap(&v[mid], &v[lo]);
	if (v[hi] < v[lo]) swap(&v[hi], &v[lo]);
	if (v[hi] < v[mid]) swap(&v[hi], &v[mid]);
	return v[mid];
}

static void quicksort(int *v, int lo, int hi) {
	while (lo < hi) {
		int p = median3(v, lo, hi), i = lo, j = hi;
		while (i <= j) {
			while (v[i] < p) i++;
			while (v[j] > p) j--;
			if (i <= j) swap(&v[i++], &v[j--]);
		}
		if (j - lo < hi - i) {
			quicksort(v, lo, j);
			lo = i;
		} else {
			quicksort(v, i, hi);
			hi = j;
		}
	}
}

__attribute__((noinline)) long sort_workload(uint32_t seed, int n) {
	int *v = malloc(sizeof(int) * (size_t)n);
	if (!v) return -1;
	for (int i = 0; i < n; i++) v[i] = (int)(step(&seed) % 100000);
	quicksort(v, 0, n - 1);
	long s = 0;
	for (int i = 0; i < n; i += 7) s += v[i];
	free(v);
	return s;
}

static inline int is_vowel(char c) { return strchr("aeiouAEIOU", c) != NULL; }

static inline int word_score(const char *w, size_t n, uint32_t *seed) {
	int v = 0;
	for (size_t i = 0; i < n; i++) v += is_vowel(w[i]) ? 3 : 1;
	return v + score(w, n, seed);
}

__attribute__((noinline)) int text_workload(const char *text, uint32_t seed) {
	int total = 0;
	const char *p = text;
	while (*p) {
		while (*p == ' ') p++;
		const char *s = p;
		while (*p && *p != ' ') p++;
		if (p > s) total += word_score(s, (size_t)(p - s), &seed);
	}
	return total;
}

static inline double poly(double x) { return ((0.5 * x - 1.25) * x + 3.0) * x - 0.75; }
static inline double deriv(double x) { return (1.5 * x - 2.5) * x + 3.0; }
static inline double newton_step(double x) { return x - poly(x) / deriv(x); }

__attribute__((noinline)) double math_workload(double x, int iters) {
	double acc = 0;
	for (int i = 0; i < iters; i++) {
		x = newton_step(x + (double)(i % 5) * 0.01);
		acc += x;
	}
	return acc;
}

int main(int argc, char **argv) {
	int rounds = argc > 1 ? atoi(argv[1]) : 200;
	uint32_t seed = (uint32_t)argc * 2654435761U;
	const char *text = "the quick brown fox jumps over the lazy dog again and again";
	long out = 0;
	for (int i = 0; i < rounds; i++) {
		out += hash_workload(seed + (uint32_t)i, 2000);
		out += sort_workload(seed ^ (uint32_t)i, 2000);
		out += text_workload(text, seed + (uint32_t)i);
		out += (long)math_workload(0.3 + i * 1e-3, 1000);
	}
	printf("%ld\n", out);
	return 0;
}
