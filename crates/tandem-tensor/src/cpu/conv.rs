//! CPU kernels: conv.
