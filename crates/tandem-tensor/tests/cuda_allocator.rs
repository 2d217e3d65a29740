//! The caching allocator on a real GPU. Kept in its own test binary: the counters are
//! per device, and tests running in parallel in one process would move them.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::*;
use tandem_tensor::{cuda, BinaryOp, DType, Tensor, UnaryOp};

#[test]
fn allocator_reuses_freed_blocks() {
    if !gpu() {
        return;
    }
    let x = to_gpu(&Tensor::ones(&[256, 256], DType::F32));
    let step = |x: &Tensor| {
        let y = x.unary(UnaryOp::Exp).unwrap();
        let z = y.binary(BinaryOp::Mul, x).unwrap();
        z.matmul(x).unwrap().to_f64_vec().unwrap().len()
    };
    step(&x);
    let before = cuda::memory_stats(0).unwrap();
    eprintln!("after the first step: {before:?}");
    step(&x);
    let after = cuda::memory_stats(0).unwrap();
    assert_eq!(
        after.misses, before.misses,
        "a second identical step allocates nothing new: {before:?} -> {after:?}"
    );
    assert!(after.hits > before.hits);
    cuda::empty_cache(0).unwrap();
    assert_eq!(cuda::memory_stats(0).unwrap().cached_bytes, 0);
}

/// Host-to-device copies are staged through pinned buffers without waiting for the GPU: many
/// copies of different sizes queued back to back (buffers reused while earlier DMAs may still
/// run), sources changed or dropped right after each copy, every device tensor still holds
/// what the host held at the time of its copy.
#[test]
fn staged_host_to_device_copies_keep_their_values() {
    if !gpu() {
        return;
    }
    let sizes = [1usize, 7, 1000, 65_536, 16_385, 300_000, 3, 1 << 20];
    let mut on_device = Vec::new();
    let mut expected = Vec::new();
    for round in 0..4 {
        for (i, &n) in sizes.iter().enumerate() {
            let mut host: Vec<f32> = (0..n).map(|k| (k + 31 * i + 1000 * round) as f32).collect();
            let t = Tensor::from_vec(host.clone(), &[n]).unwrap();
            let d = t.to_device(GPU).unwrap();
            // Work queued behind the copy, and the source gone before anything synchronizes.
            let d = d.binary(tandem_tensor::BinaryOp::Add, &d).unwrap();
            drop(t);
            host.iter_mut().for_each(|v| *v *= 2.0);
            on_device.push(d);
            expected.push(host);
        }
    }
    for (d, want) in on_device.iter().zip(&expected) {
        assert_eq!(&d.to_vec::<f32>().unwrap(), want);
    }
    // Other dtypes go through the same buffers.
    let b = Tensor::from_vec(vec![true, false, true], &[3]).unwrap();
    assert_eq!(
        b.to_device(GPU).unwrap().to_vec::<bool>().unwrap(),
        vec![true, false, true]
    );
    let i = Tensor::from_vec(vec![-3i64, 9, 1 << 40], &[3]).unwrap();
    assert_eq!(
        i.to_device(GPU).unwrap().to_vec::<i64>().unwrap(),
        vec![-3, 9, 1 << 40]
    );
}
