//! Tensor operations: reduce.
