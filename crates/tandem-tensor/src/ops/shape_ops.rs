//! Tensor operations: shape_ops.
