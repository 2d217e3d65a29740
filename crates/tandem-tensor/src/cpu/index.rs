//! CPU kernels: index.
