//! CPU kernels: softmax.
