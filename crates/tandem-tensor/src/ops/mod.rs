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
