//! field-rust: the field tests' 75/25 workload in Rust (see
//! testdata/field-c/main.c):
//!
//!   main -> run -> hot_middle (3 calls per round) -> hot_inner
//!               -> cold_path  (1 call per round)  -> hot_inner
//!
//! hot_inner, a frameless leaf without calls, does all the work, so
//! hot_middle holds exactly 75% of its CPU time and cold_path 25%; which
//! of a round's four calls is cold_path's is drawn at random (see
//! testdata/field-c/main.c for why).
//!
//! Usage: field-rust SECONDS [ROUNDS]. A release build (no frame pointers).
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHUNK: u32 = 50_000;

#[inline(never)]
fn hot_inner(mut x: u64, n: u32) -> u64 {
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x = black_box(x);
    }
    x
}

#[inline(never)]
fn hot_middle(mut x: u64, n: u32) -> u64 {
    for _ in 0..n {
        x = hot_inner(x, black_box(CHUNK)) + 1;
    }
    black_box(x)
}

#[inline(never)]
fn cold_path(x: u64) -> u64 {
    black_box(hot_inner(x, black_box(CHUNK)) + 3)
}

#[inline(never)]
fn run(seconds: f64, rounds: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs_f64(seconds.max(0.0));
    let mut x = 1u64;
    let mut seed = 88172645463325252u64;
    let mut r = 0u64;
    while if rounds > 0 { r < rounds } else { Instant::now() < end } {
        // xorshift64: how many of hot_middle's calls come before cold_path's
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let before = (seed >> 62) as u32;
        x = hot_middle(x, before);
        x = cold_path(x);
        x = hot_middle(x, 3 - before);
        r += 1;
    }
    x
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let rounds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    black_box(run(seconds, rounds));
}
