//! Foundation kernel speed (issue 2): each Tandem kernel next to the baseline it must be compared
//! with, in the same run.
//!
//! - `matmul_f32/{512,1024,2048}/{tandem,gemm_direct}`: `Tensor::matmul` against the `gemm`
//!   crate called directly on the same buffers (throughput in elements = FLOP, so criterion's
//!   "Gelem/s" reads as GFLOP/s). Target: Tandem within 10% of direct gemm.
//! - `memory/{copy,copy_alloc}/std` and `memory/{add,mul,sum,softmax,transpose}/tandem`: 4M-element f32 (16 MB) buffers. `copy` is a plain `copy_from_slice` into a
//!   preallocated buffer (reads 16 MB, writes 16 MB); `add`/`mul` read 2 x 16 MB and write
//!   16 MB; `sum` reads 16 MB; `softmax` is over the last axis of [4096, 1024] (reads and
//!   writes 16 MB); `transpose` is `.contiguous()` of a transposed [2048, 2048]. Throughput
//!   is in bytes moved, so the GB/s figures compare directly. Targets: add/mul/sum >= 70% of
//!   the copy's bandwidth, softmax <= 3x the copy's time.
//!
//! Run with `RAYON_NUM_THREADS=2 cargo bench --bench kernels`.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use tandem::tensor::{BinaryOp, Tensor};

/// Deterministic values in [-1, 1) without a random-number dependency.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// `dst = lhs @ rhs` for row-major `n x n` matrices with the `gemm` crate, as Tandem calls it
/// (overwrite, all threads).
fn gemm_direct(n: usize, lhs: &[f32], rhs: &[f32], dst: &mut [f32]) {
    assert!(lhs.len() >= n * n && rhs.len() >= n * n && dst.len() >= n * n);
    let s = n as isize;
    // SAFETY: the three buffers hold at least n*n elements in row-major order (checked above)
    // and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            dst.as_mut_ptr(),
            1,
            s,
            false,
            lhs.as_ptr(),
            1,
            s,
            rhs.as_ptr(),
            1,
            s,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    for n in [512usize, 1024, 2048] {
        group.sample_size(if n >= 2048 { 10 } else { 30 });
        group.measurement_time(Duration::from_secs(if n >= 2048 { 8 } else { 4 }));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        let ta = Tensor::from_vec(values(n * n, 1), &[n, n]).unwrap();
        let tb = Tensor::from_vec(values(n * n, 2), &[n, n]).unwrap();
        let (la, lb) = (ta.as_slice::<f32>().unwrap(), tb.as_slice::<f32>().unwrap());
        group.bench_with_input(BenchmarkId::new(n.to_string(), "tandem"), &n, |bench, _| {
            bench.iter(|| black_box(ta.matmul(&tb).unwrap()))
        });
        group.bench_with_input(
            BenchmarkId::new(n.to_string(), "gemm_direct"),
            &n,
            |bench, &n| {
                bench.iter(|| {
                    // A fresh output each time, as `Tensor::matmul` returns a new tensor.
                    let mut dst = vec![0.0f32; n * n];
                    gemm_direct(n, la, lb, &mut dst);
                    black_box(dst)
                })
            },
        );
    }
    group.finish();
}

const N: usize = 1 << 22;
const BYTES: u64 = (N * std::mem::size_of::<f32>()) as u64;

fn memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory");
    group.sample_size(40);
    group.measurement_time(Duration::from_secs(4));
    let a = values(N, 3);
    let b = values(N, 4);
    let ta = Tensor::from_vec(a.clone(), &[N]).unwrap();
    let tb = Tensor::from_vec(b.clone(), &[N]).unwrap();

    group.throughput(Throughput::Bytes(2 * BYTES));
    let mut dst = vec![0.0f32; N];
    group.bench_function("copy/std", |bench| {
        bench.iter(|| {
            dst.copy_from_slice(black_box(&a));
            black_box(&mut dst);
        })
    });
    group.bench_function("copy_alloc/std", |bench| {
        bench.iter(|| black_box(black_box(&a).to_vec()))
    });

    group.throughput(Throughput::Bytes(3 * BYTES));
    group.bench_function("add/tandem", |bench| {
        bench.iter(|| black_box(ta.binary(BinaryOp::Add, &tb).unwrap()))
    });
    group.bench_function("mul/tandem", |bench| {
        bench.iter(|| black_box(ta.binary(BinaryOp::Mul, &tb).unwrap()))
    });

    group.throughput(Throughput::Bytes(BYTES));
    group.bench_function("sum/tandem", |bench| {
        bench.iter(|| black_box(ta.sum_all().unwrap()))
    });

    group.throughput(Throughput::Bytes(2 * BYTES));
    let rows = Tensor::from_vec(a.clone(), &[4096, 1024]).unwrap();
    group.bench_function("softmax/tandem", |bench| {
        bench.iter(|| black_box(rows.softmax(1).unwrap()))
    });
    let square = Tensor::from_vec(a.clone(), &[2048, 2048]).unwrap();
    let transposed = square.t().unwrap();
    group.bench_function("transpose/tandem", |bench| {
        bench.iter(|| black_box(transposed.contiguous().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, matmul, memory);
criterion_main!(benches);
