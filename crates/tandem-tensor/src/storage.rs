//! Storage: the typed buffers behind tensors.

use crate::{DType, Device, Element, Error, Result};
use half::{bf16, f16};

/// Host memory of one dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    /// `float32` elements.
    F32(Vec<f32>),
    /// `float64` elements.
    F64(Vec<f64>),
    /// `float16` elements.
    F16(Vec<f16>),
    /// `bfloat16` elements.
    BF16(Vec<bf16>),
    /// `int64` elements.
    I64(Vec<i64>),
    /// `int32` elements.
    I32(Vec<i32>),
    /// `uint8` elements.
    U8(Vec<u8>),
    /// `bool` elements.
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` (or slice) inside a [`CpuStorage`], for every
/// dtype. The body is usually a call to a generic function.
#[macro_export]
macro_rules! match_cpu_storage {
    ($storage:expr, $v:ident => $body:expr) => {
        match $storage {
            $crate::CpuStorage::F32($v) => $body,
            $crate::CpuStorage::F64($v) => $body,
            $crate::CpuStorage::F16($v) => $body,
            $crate::CpuStorage::BF16($v) => $body,
            $crate::CpuStorage::I64($v) => $body,
            $crate::CpuStorage::I32($v) => $body,
            $crate::CpuStorage::U8($v) => $body,
            $crate::CpuStorage::Bool($v) => $body,
        }
    };
}

impl CpuStorage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::I32(_) => DType::I32,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match_cpu_storage!(self, v => v.len())
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `n` zeros (false for bool).
    pub fn zeros(dtype: DType, n: usize) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
            DType::I32 => CpuStorage::I32(vec![0; n]),
            DType::U8 => CpuStorage::U8(vec![0; n]),
            DType::Bool => CpuStorage::Bool(vec![false; n]),
        }
    }

    /// A buffer of `n` copies of `value` converted to `dtype`.
    pub fn full(dtype: DType, n: usize, value: f64) -> CpuStorage {
        fn fill<T: Element>(n: usize, v: f64) -> CpuStorage {
            T::into_cpu_storage(vec![T::from_f64(v); n])
        }
        match dtype {
            DType::F32 => fill::<f32>(n, value),
            DType::F64 => fill::<f64>(n, value),
            DType::F16 => fill::<f16>(n, value),
            DType::BF16 => fill::<bf16>(n, value),
            DType::I64 => fill::<i64>(n, value),
            DType::I32 => fill::<i32>(n, value),
            DType::U8 => fill::<u8>(n, value),
            DType::Bool => fill::<bool>(n, value),
        }
    }

    /// The typed slice, if `T` matches the dtype.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::cpu_slice(self).ok_or(Error::DTypeMismatch {
            op: "as_slice",
            expected: T::DTYPE.name().to_string(),
            got: self.dtype(),
        })
    }

    /// The typed mutable slice, if `T` matches the dtype.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let got = self.dtype();
        T::cpu_slice_mut(self).ok_or(Error::DTypeMismatch {
            op: "as_mut_slice",
            expected: T::DTYPE.name().to_string(),
            got,
        })
    }

    /// The raw little-endian bytes of the buffer.
    pub fn as_bytes(&self) -> &[u8] {
        fn bytes<T: Copy>(v: &[T]) -> &[u8] {
            // SAFETY: every element type here is plain old data without padding, and u8 has
            // alignment 1; bool is one byte holding 0 or 1.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        match_cpu_storage!(self, v => bytes(v))
    }

    /// Builds a buffer from little-endian bytes. Fails if the byte count is not a multiple of
    /// the element size, or a bool byte is not 0 or 1.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<CpuStorage> {
        let size = dtype.size_in_bytes();
        if !bytes.len().is_multiple_of(size) {
            return Err(Error::format(
                "tensor data",
                format!(
                    "{} bytes is not a whole number of {dtype} elements",
                    bytes.len()
                ),
            ));
        }
        let n = bytes.len() / size;
        fn read<T: Element, const N: usize>(
            bytes: &[u8],
            n: usize,
            conv: impl Fn([u8; N]) -> T,
        ) -> Vec<T> {
            let mut out = Vec::with_capacity(n);
            for chunk in bytes.chunks_exact(N) {
                let mut a = [0u8; N];
                a.copy_from_slice(chunk);
                out.push(conv(a));
            }
            out
        }
        Ok(match dtype {
            DType::F32 => CpuStorage::F32(read(bytes, n, f32::from_le_bytes)),
            DType::F64 => CpuStorage::F64(read(bytes, n, f64::from_le_bytes)),
            DType::F16 => CpuStorage::F16(read(bytes, n, f16::from_le_bytes)),
            DType::BF16 => CpuStorage::BF16(read(bytes, n, bf16::from_le_bytes)),
            DType::I64 => CpuStorage::I64(read(bytes, n, i64::from_le_bytes)),
            DType::I32 => CpuStorage::I32(read(bytes, n, i32::from_le_bytes)),
            DType::U8 => CpuStorage::U8(bytes.to_vec()),
            DType::Bool => {
                if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                    return Err(Error::format(
                        "tensor data",
                        format!("bool byte {b} is not 0 or 1"),
                    ));
                }
                CpuStorage::Bool(bytes.iter().map(|&b| b == 1).collect())
            }
        })
    }
}

/// The buffer behind a tensor: host memory, or device memory with the `cuda` feature.
#[derive(Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(CpuStorage),
    /// Memory of an NVIDIA GPU.
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaStorage),
}

impl Clone for Storage {
    fn clone(&self) -> Self {
        match self {
            Storage::Cpu(s) => Storage::Cpu(s.clone()),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Storage::Cuda(s.clone()),
        }
    }
}

impl Storage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        }
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.device(),
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.len(),
        }
    }

    /// True when the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The host buffer, or an error naming the op and the device the data is on (an op that
    /// reaches this with GPU data has no CUDA kernel).
    pub fn cpu(&self, #[allow(unused_variables)] op: &'static str) -> Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(crate::cuda::no_kernel(op, s)),
        }
    }

    /// The mutable host buffer, or an error naming the op and the device the data is on.
    pub fn cpu_mut(
        &mut self,
        #[allow(unused_variables)] op: &'static str,
    ) -> Result<&mut CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => Err(crate::cuda::no_kernel(op, s)),
        }
    }
}
