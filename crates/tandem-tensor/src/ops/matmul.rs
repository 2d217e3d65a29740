//! Tensor operations: matmul.
