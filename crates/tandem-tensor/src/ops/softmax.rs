//! Tensor operations: softmax.
