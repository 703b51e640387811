//! dwarf-rust: a release build with full debuginfo (generics, traits,
//! closures, iterator chains) for the dwarfsym tests.
use std::collections::{BTreeMap, HashMap};

trait Shape {
    fn area(&self) -> f64;
    fn scale(&mut self, k: f64);
}

#[derive(Clone, Debug)]
struct Circle {
    r: f64,
}

#[derive(Clone, Debug)]
struct Rect {
    w: f64,
    h: f64,
}

impl Shape for Circle {
    fn area(&self) -> f64 {
        std::f64::consts::PI * self.r * self.r
    }
    fn scale(&mut self, k: f64) {
        self.r *= k;
    }
}

impl Shape for Rect {
    fn area(&self) -> f64 {
        self.w * self.h
    }
    fn scale(&mut self, k: f64) {
        self.w *= k;
        self.h *= k;
    }
}

struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

mod stats {
    pub fn mean<I: Iterator<Item = f64>>(it: I) -> f64 {
        let (s, n) = it.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        if n == 0 { 0.0 } else { s / n as f64 }
    }

    pub fn histogram<T: Ord + Copy>(xs: &[T]) -> std::collections::BTreeMap<T, usize> {
        let mut m = std::collections::BTreeMap::new();
        for &x in xs {
            *m.entry(x).or_insert(0) += 1;
        }
        m
    }
}

#[inline(never)]
fn shapes(rng: &mut Rng, n: usize) -> f64 {
    let mut v: Vec<Box<dyn Shape>> = Vec::with_capacity(n);
    for i in 0..n {
        if i % 2 == 0 {
            v.push(Box::new(Circle { r: (rng.next() % 100) as f64 }));
        } else {
            v.push(Box::new(Rect { w: (rng.next() % 50) as f64, h: (rng.next() % 70) as f64 }));
        }
    }
    for s in v.iter_mut() {
        s.scale(1.5);
    }
    stats::mean(v.iter().map(|s| s.area()))
}

#[inline(never)]
fn words(rng: &mut Rng, n: usize) -> usize {
    let dict = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..n {
        let w = dict[(rng.next() % dict.len() as u64) as usize];
        *counts.entry(w.to_uppercase()).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.iter().take(3).map(|(k, c)| k.len() * c).sum()
}

#[inline(never)]
fn numbers(rng: &mut Rng, n: usize) -> u64 {
    let mut xs: Vec<u32> = (0..n).map(|_| (rng.next() % 1000) as u32).collect();
    xs.sort_unstable();
    let h: BTreeMap<u32, usize> = stats::histogram(&xs);
    h.iter().filter(|(k, _)| *k % 3 == 0).map(|(k, c)| *k as u64 * *c as u64).sum()
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let mut rng = Rng(88172645463325252);
    let mut acc = 0.0;
    for _ in 0..rounds {
        acc += shapes(&mut rng, 1000);
        acc += words(&mut rng, 1000) as f64;
        acc += numbers(&mut rng, 2000) as f64;
    }
    println!("{acc}");
}
