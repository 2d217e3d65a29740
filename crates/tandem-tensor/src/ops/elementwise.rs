//! Tensor operations: elementwise.
