//! The floating-point peak of this CPU: 24 independent chains of 512-bit (AVX-512) or 256-bit
//! (AVX2) fused multiply-adds, no memory traffic, on one thread and then on every core at once.
//! The matrix-product figures of `docs/benchmarks.md` are read against this number.
//!
//! Then the cache read bandwidth for a buffer the size of the MLP's first weight matrix
//! (784 x 128 `f32`, 401,408 bytes: what a batch-1 forward pass, W6, must read every time):
//! the time of one pass summing it on one thread, and on two threads each summing its own
//! half, started together and waited for by spinning. The W6 figures are read against it.
//!
//! `cargo run --release -p tandem-tensor --example fma_peak`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Chains of FMAs per iteration (enough independent work to hide the FMA latency).
const CHAINS: usize = 24;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.5); CHAINS];
    let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-4));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for v in acc {
        s = _mm512_add_ps(s, v);
    }
    _mm512_reduce_add_ps(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma256(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.5); CHAINS];
    let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(1e-4));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds the 8 floats stored.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// GFLOP/s of one thread running `iters` iterations, and the vector width used.
#[cfg(target_arch = "x86_64")]
fn one_thread(iters: usize) -> (f64, usize) {
    let start = Instant::now();
    let (sink, lanes) = if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked above).
        (unsafe { fma512(iters) }, 16)
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        (unsafe { fma256(iters) }, 8)
    } else {
        return (0.0, 0);
    };
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    ((iters * CHAINS * lanes * 2) as f64 / secs / 1e9, lanes)
}

/// Sums `x` with four vector accumulators, compiled for the CPU's widest vectors by the
/// kernels' own run-time dispatch.
#[cfg(target_arch = "x86_64")]
fn sum(x: &[f32]) -> f32 {
    tandem_tensor::cpu::simd::dispatch(
        #[inline(always)]
        || sum_lanes(x),
    )
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    // Four separate arrays (one array of four is kept in memory, not in registers).
    let (mut a0, mut a1, mut a2, mut a3) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
    for c in x.chunks_exact(64) {
        for l in 0..16 {
            a0[l] += c[l];
            a1[l] += c[16 + l];
            a2[l] += c[32 + l];
            a3[l] += c[48 + l];
        }
    }
    (0..16).map(|l| a0[l] + a1[l] + a2[l] + a3[l]).sum()
}

/// Microseconds per pass over `data`: on the calling thread alone, then split in two halves
/// between the calling thread and a second one, in lockstep.
#[cfg(target_arch = "x86_64")]
fn read_passes(data: &[f32], passes: usize) -> (f64, f64) {
    for _ in 0..passes / 10 {
        std::hint::black_box(sum(std::hint::black_box(data)));
    }
    let start = Instant::now();
    for _ in 0..passes {
        std::hint::black_box(sum(std::hint::black_box(data)));
    }
    let one = start.elapsed().as_secs_f64() * 1e6 / passes as f64;
    let (lo, hi) = data.split_at(data.len() / 2);
    let (go, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let two = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=passes + passes / 10 {
                while go.load(Ordering::Acquire) < i {
                    std::hint::spin_loop();
                }
                std::hint::black_box(sum(hi));
                done.store(i, Ordering::Release);
            }
        });
        let mut start = Instant::now();
        for i in 1..=passes + passes / 10 {
            if i == passes / 10 + 1 {
                start = Instant::now();
            }
            go.store(i, Ordering::Release);
            std::hint::black_box(sum(std::hint::black_box(lo)));
            while done.load(Ordering::Acquire) < i {
                std::hint::spin_loop();
            }
        }
        start.elapsed().as_secs_f64() * 1e6 / passes as f64
    });
    (one, two)
}

#[cfg(target_arch = "x86_64")]
fn main() {
    let iters = 40_000_000;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    one_thread(iters / 10);
    let (single, lanes) = one_thread(iters);
    if lanes == 0 {
        println!("no AVX2/FMA or AVX-512: nothing to measure");
        return;
    }
    let all: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| one_thread(iters).0))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0.0))
            .collect()
    });
    println!("{}-bit FMA, {CHAINS} chains", lanes * 32);
    println!("one thread: {single:.1} GFLOP/s");
    println!(
        "{threads} threads at once: {:.1} GFLOP/s in total ({})",
        all.iter().sum::<f64>(),
        all.iter()
            .map(|g| format!("{g:.1}"))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let weight: Vec<f32> = (0..784 * 128).map(|i| (i % 7) as f32).collect();
    let bytes = weight.len() * 4;
    let (one, two) = read_passes(&weight, 200_000);
    let gbs = |us: f64| bytes as f64 / us / 1e3;
    println!("reading {bytes} bytes (784 x 128 f32) again and again:");
    println!("one thread: {one:.2} us per pass ({:.1} GB/s)", gbs(one));
    println!(
        "two threads, a half each: {two:.2} us per pass ({:.1} GB/s)",
        gbs(two)
    );
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("this measurement is written for x86-64");
}
