//! npz I/O.
