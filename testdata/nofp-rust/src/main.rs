// nofp-rust: a Rust release binary (no frame pointers), for testing
// table-based unwinding. Runs for argv[1] seconds (forever when absent or 0).
//
// Hot functions and their call chains (innermost first):
//   nofp_rust::mix <- nofp_rust::recurse x DEPTH <- nofp_rust::recurse_phase
//       <- nofp_rust::run <- nofp_rust::main <- std::rt::lang_start... <- main
//   the sort_by closure <- core::slice::sort internals <- nofp_rust::sort_phase
//       <- nofp_rust::run <- nofp_rust::main <- ... <- main
use std::time::Instant;

// black_box keeps the optimizer from computing the work away. Not
// std::hint::black_box: that is stable from Rust 1.66, and Debian
// bookworm's rustc is 1.63.
#[inline(always)]
fn black_box<T: Copy>(x: T) -> T {
    // SAFETY: x is a valid, aligned value of a Copy type.
    unsafe { std::ptr::read_volatile(&x) }
}

const DEPTH: u32 = 30;

#[inline(never)]
fn mix(mut x: u64) -> u64 {
    for _ in 0..20000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    }
    black_box(x)
}

#[inline(never)]
fn recurse(depth: u32, x: u64) -> u64 {
    let pad = black_box([depth as u8; 64]);
    if depth == 0 {
        return mix(x).wrapping_add(pad[0] as u64);
    }
    recurse(depth - 1, x.wrapping_add(depth as u64)).wrapping_mul(3).wrapping_add(pad[1] as u64)
}

#[inline(never)]
fn recurse_phase(x: u64) -> u64 {
    recurse(DEPTH, x).wrapping_add(7)
}

#[inline(never)]
fn sort_phase(mut seed: u32) -> u64 {
    // A plain loop, not an iterator closure: the comparator below must be
    // the only closure of sort_phase, since tests find it by that name.
    let mut v: Vec<u32> = Vec::with_capacity(16384);
    for _ in 0..16384 {
        seed = seed.wrapping_mul(1103515245).wrapping_add(12345);
        v.push(seed);
    }
    v.sort_by(|a, b| {
        let mut x = *a;
        for _ in 0..4 {
            x = black_box(x.wrapping_mul(2654435761).wrapping_add(1));
        }
        black_box(x);
        a.cmp(b)
    });
    v[0] as u64 + 1
}

#[inline(never)]
fn run(seconds: f64) -> u64 {
    let start = Instant::now();
    let mut acc = 0u64;
    let mut round = 1u32;
    loop {
        acc = acc.wrapping_add(sort_phase(round));
        acc = acc.wrapping_add(recurse_phase(acc));
        round += 1;
        if seconds > 0.0 && start.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    acc + 1
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    black_box(run(seconds));
}
