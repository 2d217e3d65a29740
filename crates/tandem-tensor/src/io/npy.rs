//! npy I/O.
