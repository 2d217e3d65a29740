//! Tensor operations: index.
