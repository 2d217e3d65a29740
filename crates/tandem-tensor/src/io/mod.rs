//! NumPy (`.npy`, `.npz`) and safetensors I/O.

pub mod npy;
pub mod npz;
pub mod safetensors;
