//! CPU kernels: binary.
