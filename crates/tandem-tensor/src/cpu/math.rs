//! CPU kernels: math.
