//! Tensor-level operations, one module per op family. Each checks its arguments, returns an
//! error naming the op, shapes and dtypes on bad input, and calls the kernel for the device.

mod cast;
mod conv;
mod elementwise;
mod index;
mod matmul;
pub mod optim;
mod pool;
mod reduce;
mod shape_ops;
mod softmax;

/// The bits of a float tensor's values (as `f64`), for tests that check two computations give
/// the same numbers, NaN and signed zeros included.
#[cfg(test)]
pub(crate) fn bits(t: &crate::Tensor) -> Vec<u64> {
    t.to_f64_vec()
        .expect("a float tensor")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}
