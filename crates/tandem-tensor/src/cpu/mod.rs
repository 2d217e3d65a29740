//! CPU kernels. Each fast kernel has a plain scalar reference beside it and a property test
//! that checks one against the other on random shapes, including non-contiguous views.

pub mod alloc;
pub mod arg_reduce;
pub mod binary;
pub mod conv;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod conv_direct;
pub mod copy;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod dot;
pub mod index;
pub mod math;
pub mod matmul;
pub mod par;
pub mod pool;
pub mod reduce;
pub mod simd;
pub mod softmax;
pub mod strided;
pub mod unary;
