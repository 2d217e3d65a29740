//! f32 matrix products through `Tensor::matmul`, next to the `gemm` crate called directly on
//! the same buffers, at 512, 1024 and 2048. Tandem should stay within 10% of direct gemm.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tandem_tensor::Tensor;

fn square_products(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    for n in [512usize, 1024, 2048] {
        group.sample_size(if n >= 2048 { 10 } else { 20 });
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let ta = Tensor::from_slice(&a, &[n, n]).unwrap();
        let tb = Tensor::from_slice(&b, &[n, n]).unwrap();
        let la = ta.as_slice::<f32>().unwrap();
        let lb = tb.as_slice::<f32>().unwrap();
        group.bench_with_input(BenchmarkId::new("tandem", n), &n, |bench, _| {
            bench.iter(|| black_box(ta.matmul(&tb).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("gemm_direct", n), &n, |bench, &n| {
            bench.iter(|| {
                // A fresh output each time, as Tensor::matmul allocates one.
                let mut dst = vec![0.0f32; n * n];
                let s = n as isize;
                // SAFETY: the three buffers hold n*n elements in row-major order.
                unsafe {
                    gemm::gemm(
                        n,
                        n,
                        n,
                        dst.as_mut_ptr(),
                        1,
                        s,
                        false,
                        la.as_ptr(),
                        1,
                        s,
                        lb.as_ptr(),
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
                black_box(dst)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, square_products);
criterion_main!(benches);
