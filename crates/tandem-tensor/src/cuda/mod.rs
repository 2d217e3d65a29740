//! The CUDA backend (feature `cuda`): device memory with a caching allocator, host/device
//! copies, cuBLAS matrix products and CUDA C kernels compiled at run time by NVRTC for the
//! device's compute capability.
//!
//! Nothing is linked at build time: the driver, NVRTC and cuBLAS libraries are loaded when a
//! tensor first goes to a GPU, and their absence is an error ("CUDA requested, no driver
//! found"), never a panic. Without the feature, [`Device::Cuda`](crate::Device::Cuda) is
//! rejected by [`Tensor::to_device`](crate::Tensor::to_device) with a clear error; the pure
//! parts (allocator bookkeeping, kernel source generation) are compiled either way.

pub mod bucket;
pub mod meta;
pub mod source;

#[cfg(feature = "cuda")]
mod catalog;
#[cfg(feature = "cuda")]
mod compile;
#[cfg(feature = "cuda")]
mod conv;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod index;
#[cfg(feature = "cuda")]
mod matmul;
#[cfg(feature = "cuda")]
mod optim;
#[cfg(feature = "cuda")]
mod pool;
#[cfg(feature = "cuda")]
mod reduce;
#[cfg(feature = "cuda")]
mod staging;
#[cfg(feature = "cuda")]
mod storage;

pub use bucket::AllocStats;
pub use source::{FusedProgram, FusedStep};

#[cfg(feature = "cuda")]
pub use catalog::compile_all_kernels;
#[cfg(feature = "cuda")]
pub use device::{cublas_present, driver_present, nvrtc_present, NO_DRIVER};
#[cfg(feature = "cuda")]
pub use elementwise::fused_elementwise;
#[cfg(feature = "cuda")]
pub use storage::CudaStorage;

#[cfg(feature = "cuda")]
pub(crate) use conv::{conv2d, input_grad as conv2d_input_grad, weight_grad as conv2d_weight_grad};
#[cfg(feature = "cuda")]
pub(crate) use elementwise::{binary, cast, copy, unary, where_cond};
#[cfg(feature = "cuda")]
pub(crate) use index::{broadcast_index, cat, gather, scatter_add, write_region};
#[cfg(feature = "cuda")]
pub(crate) use matmul::matmul;
#[cfg(feature = "cuda")]
pub(crate) use optim::{adam, rmsprop, sgd};
#[cfg(feature = "cuda")]
pub(crate) use pool::{pool, PoolKind};
#[cfg(feature = "cuda")]
pub(crate) use reduce::{arg_reduce, cross_entropy, reduce, softmax};

#[cfg(feature = "cuda")]
use crate::{Device, Error, Result, Storage, Tensor};
#[cfg(feature = "cuda")]
use std::sync::atomic::{AtomicBool, Ordering};

/// True when Tandem was built with the `cuda` feature, a driver loads, and at least one GPU
/// is visible.
pub fn is_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        device::device_count().is_ok_and(|n| n > 0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        false
    }
}

/// Number of visible GPUs (an error naming the cause when there is no driver).
#[cfg(feature = "cuda")]
pub fn device_count() -> Result<usize> {
    device::device_count()
}

/// The caching allocator's counters for GPU `ordinal`.
#[cfg(feature = "cuda")]
pub fn memory_stats(ordinal: usize) -> Result<AllocStats> {
    Ok(device::get(ordinal)?.stats())
}

/// Returns every cached (free) block of GPU `ordinal` to the driver.
#[cfg(feature = "cuda")]
pub fn empty_cache(ordinal: usize) -> Result<()> {
    device::get(ordinal)?.empty_cache("empty_cache")
}

/// Waits until all work queued on GPU `ordinal` is done (for timing; copies to the host
/// already wait).
#[cfg(feature = "cuda")]
pub fn synchronize(ordinal: usize) -> Result<()> {
    device::get(ordinal)?.synchronize("synchronize")
}

/// Number of kernel modules NVRTC has compiled for GPU `ordinal` so far.
#[cfg(feature = "cuda")]
pub fn compiled_module_count(ordinal: usize) -> Result<usize> {
    Ok(compile::module_count(&*device::get(ordinal)?))
}

#[cfg(feature = "cuda")]
static ALLOW_TF32: AtomicBool = AtomicBool::new(false);

/// Lets `f32` matrix products (and convolutions) use TF32 tensor cores: much faster on
/// Ampere and later, with a 10-bit mantissa for the products. Off by default, like PyTorch's
/// `torch.backends.cuda.matmul.allow_tf32 = False`.
#[cfg(feature = "cuda")]
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// Whether TF32 is allowed (see [`set_allow_tf32`]).
#[cfg(feature = "cuda")]
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Copies a tensor to GPU `ordinal` (contiguous result). From another GPU the data goes
/// through the host.
#[cfg(feature = "cuda")]
pub(crate) fn to_device(t: &Tensor, ordinal: usize) -> Result<Tensor> {
    let dev = device::get(ordinal)?;
    let host = match t.device() {
        Device::Cpu => t.contiguous()?,
        Device::Cuda(_) => to_host(t)?,
    };
    let (cpu, layout) = host.cpu("to_device")?;
    let s = if layout.offset() == 0 && cpu.len() == host.numel() {
        storage::CudaStorage::from_cpu(&dev, "to_device", cpu)?
    } else {
        let c = host.copy()?;
        storage::CudaStorage::from_cpu(&dev, "to_device", c.cpu("to_device")?.0)?
    };
    elementwise::wrap(s, t.shape())
}

/// Copies a CUDA tensor to host memory (contiguous result).
#[cfg(feature = "cuda")]
pub(crate) fn to_host(t: &Tensor) -> Result<Tensor> {
    let c = t.contiguous()?;
    match &**c.storage() {
        Storage::Cuda(s) => {
            let host = s.to_cpu("to_device")?;
            Tensor::from_cpu_storage(host, t.shape())
        }
        Storage::Cpu(_) => Ok(c),
    }
}

/// A tensor of `shape` filled with `value` (converted to `dtype`) created on GPU `ordinal`.
#[cfg(feature = "cuda")]
pub(crate) fn full(
    ordinal: usize,
    shape: &[usize],
    value: f64,
    dtype: crate::DType,
) -> Result<Tensor> {
    let dev = device::get(ordinal)?;
    elementwise::full(&dev, shape, value, dtype)
}

/// The error for an op that has no CUDA kernel yet (raised where an op reaches for host data).
#[cfg(feature = "cuda")]
pub(crate) fn no_kernel(op: &'static str, s: &CudaStorage) -> Error {
    Error::InvalidArgument {
        op,
        msg: format!(
            "no CUDA kernel for this op yet (operand of dtype {} on {}); move the operands to the CPU with .to_device(Device::Cpu)",
            s.dtype(),
            s.device()
        ),
    }
}
