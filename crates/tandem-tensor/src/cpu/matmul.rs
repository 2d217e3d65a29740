//! CPU kernels: matmul.
