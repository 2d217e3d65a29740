//! Tensor operations: pool.
