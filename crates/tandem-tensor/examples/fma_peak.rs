//! The floating-point peak of this CPU: 24 independent chains of 512-bit (AVX-512) or 256-bit
//! (AVX2) fused multiply-adds, no memory traffic, on one thread and then on every core at once.
//! The matrix-product figures of `docs/benchmarks.md` are read against this number.
//!
//! Then the cache read bandwidth for a buffer the size of the MLP's first weight matrix
//! (784 x 128 `f32`, 401,408 bytes: what a batch-1 forward pass, W6, must read every time):
//! the time of one pass summing it on one thread, and on two threads each summing its own
//! half, started together and waited for by spinning. The W6 figures are read against it.
//!
//! The weight is read twice: starting at a 64-byte boundary (a cache line) and 16 bytes past
//! one, and each time also multiplied by a vector on one thread (`[1, 784] x [784, 128]`, the
//! W6 first layer), by Tandem's product and by the `gemm` crate called directly.
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
    // The weight at a 64-byte boundary (a cache line) and 16 bytes past one (where glibc's
    // malloc puts a large block it maps on its own; its heap blocks start at any multiple of
    // 16 bytes).
    let (k, n) = (784, 128);
    let mut buffer = vec![0.0f32; k * n + 32];
    let aligned = (64 - buffer.as_ptr() as usize % 64) % 64 / 4;
    for (name, start) in [
        ("at a 64-byte boundary", aligned),
        ("16 bytes past one", aligned + 4),
    ] {
        let weight = &mut buffer[start..start + k * n];
        for (i, w) in weight.iter_mut().enumerate() {
            *w = (i % 7) as f32 - 3.0;
        }
        let weight = &*weight;
        let bytes = weight.len() * 4;
        let (one, two) = read_passes(weight, 200_000);
        let gbs = |us: f64| bytes as f64 / us / 1e3;
        println!("reading {bytes} bytes (784 x 128 f32) {name}, again and again:");
        println!("  one thread: {one:.2} us per pass ({:.1} GB/s)", gbs(one));
        println!(
            "  two threads, a half each: {two:.2} us per pass ({:.1} GB/s)",
            gbs(two)
        );
        let (tandem, crate_gemm) = products(weight, k, n, 200_000);
        println!(
            "  [1, 784] x [784, 128] (the weight as PyTorch stores it, transposed), one thread: \
             tandem {tandem:.2} us, the gemm crate called directly {crate_gemm:.2} us"
        );
    }
}

/// Microseconds per `[1, k] x weight^T` product on one thread, `weight` `[n, k]` row-major:
/// Tandem's `cpu::matmul::gemm`, then the `gemm` crate called directly.
#[cfg(target_arch = "x86_64")]
fn products(weight: &[f32], k: usize, n: usize, runs: usize) -> (f64, f64) {
    use tandem_tensor::cpu::matmul::{gemm, MatMut, MatRef, Threads};
    let x: Vec<f32> = (0..k).map(|i| (i % 13) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; n];
    let mut time = |f: &mut dyn FnMut(&mut [f32])| {
        for _ in 0..runs / 10 {
            f(&mut out);
        }
        let start = Instant::now();
        for _ in 0..runs {
            f(&mut out);
            std::hint::black_box(&mut out);
        }
        start.elapsed().as_secs_f64() * 1e6 / runs as f64
    };
    let tandem = time(&mut |out| {
        let lhs = MatRef::row_major(&x, 1, k).expect("x");
        let rhs = MatRef::row_major(weight, n, k).expect("weight").t();
        let dst = MatMut::row_major(out, 1, n).expect("out");
        gemm(dst, lhs, rhs, false, Threads::Single).expect("product");
    });
    let crate_gemm = time(&mut |out| {
        // SAFETY: `x` is [1, k], `weight` [n, k] read as its transpose [k, n] (column stride
        // k, row stride 1) and `out` [1, n], all inside their buffers.
        unsafe {
            gemm::gemm(
                1,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                weight.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    (tandem, crate_gemm)
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("this measurement is written for x86-64");
}
