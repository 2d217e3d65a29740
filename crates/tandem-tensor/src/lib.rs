//! # tandem-tensor
//!
//! The bottom layer of Tandem: a plain n-dimensional value type ([`Tensor`]: shared storage
//! plus a [`Layout`]), its dtypes and devices, the CPU kernels (SIMD with run-time dispatch,
//! multithreaded with rayon, `gemm` for matrix products), seeded random numbers, and NumPy /
//! safetensors I/O. There is no autograd here: `tandem-eager` and `tandem-graph` build on it.
//!
//! ```
//! use tandem_tensor::{BinaryOp, Tensor};
//! let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
//! let b = Tensor::scalar(10.0f32);
//! let c = a.binary(BinaryOp::Add, &b).unwrap();
//! assert_eq!(c.to_vec::<f32>().unwrap(), vec![11.0, 12.0, 13.0]);
//! ```

pub mod cpu;
pub mod cuda;
mod device;
mod display;
mod dtype;
mod error;
pub mod io;
pub mod kinds;
pub mod layout;
pub mod ops;
pub mod random;
mod storage;
mod tensor;

pub use device::Device;
pub use dtype::{DType, Element, Float};
pub use error::{Error, Result, ResultExt};
pub use half::{bf16, f16};
pub use kinds::{ArgReduceOp, BinaryOp, Conv2dParams, Pool2dParams, ReduceOp, UnaryOp};
pub use layout::{Layout, Shape};
pub use storage::{CpuStorage, Storage};
pub use tensor::{slice_range, Tensor};
