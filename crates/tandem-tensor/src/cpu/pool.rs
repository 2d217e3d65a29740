//! CPU kernels: pool.
