//! CPU kernels: unary.
