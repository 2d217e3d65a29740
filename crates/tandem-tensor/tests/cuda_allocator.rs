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
