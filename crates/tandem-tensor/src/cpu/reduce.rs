//! CPU kernels: reduce.
