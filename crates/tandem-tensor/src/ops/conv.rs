//! Tensor operations: conv.
