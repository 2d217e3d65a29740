//! Device memory behind CUDA tensors: reference-counted blocks from the caching allocator.

use super::device::CudaDevice;
use crate::{match_cpu_storage, CpuStorage, DType, Device, Element, Error, Result};
use cudarc::driver::{result as dres, sys};
use std::sync::Arc;

/// One block of device memory; going back to its device's cache when dropped.
pub(crate) struct DeviceBuffer {
    pub(crate) ptr: sys::CUdeviceptr,
    pub(crate) bucket: usize,
    pub(crate) dev: Arc<CudaDevice>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // Work already queued on the device's single stream that reads this block runs before
        // any later use of it, so the block can be reused at once.
        self.dev.release(self.ptr, self.bucket);
    }
}

/// Elements of one dtype in the memory of one GPU. Cloning shares the memory (tensors are
/// values: every write goes through [`CudaStorage::make_unique`] first).
#[derive(Clone)]
pub struct CudaStorage {
    pub(crate) buf: Arc<DeviceBuffer>,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage({} x {}, {})",
            self.len,
            self.dtype,
            self.device()
        )
    }
}

impl CudaStorage {
    /// Uninitialized storage for `len` elements (the caller writes every element).
    pub(crate) fn alloc(
        dev: &Arc<CudaDevice>,
        op: &'static str,
        dtype: DType,
        len: usize,
    ) -> Result<CudaStorage> {
        let bytes = len
            .checked_mul(dtype.size_in_bytes())
            .ok_or_else(|| dev.err(op, format!("{len} elements of {dtype} overflow")))?;
        let (ptr, bucket) = dev.alloc_raw(op, bytes)?;
        Ok(CudaStorage {
            buf: Arc::new(DeviceBuffer {
                ptr,
                bucket,
                dev: dev.clone(),
            }),
            dtype,
            len,
        })
    }

    /// Zero-filled storage (false for bool).
    pub(crate) fn zeros(
        dev: &Arc<CudaDevice>,
        op: &'static str,
        dtype: DType,
        len: usize,
    ) -> Result<CudaStorage> {
        let s = Self::alloc(dev, op, dtype, len)?;
        if len > 0 {
            dev.bind(op)?;
            // SAFETY: the block holds at least `num_bytes` bytes; the memset is queued on the
            // device's stream, like every later use.
            unsafe { dres::memset_d8_async(s.ptr(), 0, s.num_bytes(), dev.stream.cu_stream()) }
                .map_err(|e| dev.err(op, format!("memset: {e}")))?;
        }
        Ok(s)
    }

    /// Copies a host buffer to the device.
    pub(crate) fn from_cpu(
        dev: &Arc<CudaDevice>,
        op: &'static str,
        src: &CpuStorage,
    ) -> Result<CudaStorage> {
        let s = Self::alloc(dev, op, src.dtype(), src.len())?;
        let bytes = src.as_bytes();
        if !bytes.is_empty() {
            dev.bind(op)?;
            // Through a pinned buffer, without waiting for the stream, when one is available.
            if dev.staging.upload(dev, op, s.ptr(), bytes)? {
                return Ok(s);
            }
            // SAFETY: the block holds at least `bytes.len()` bytes. The copy reads pageable
            // host memory, so the stream is synchronized before `src` can go away.
            unsafe { dres::memcpy_htod_async(s.ptr(), bytes, dev.stream.cu_stream()) }
                .map_err(|e| dev.err(op, format!("host-to-device copy: {e}")))?;
            dev.synchronize(op)?;
        }
        Ok(s)
    }

    /// Copies the whole buffer to the host.
    pub fn to_cpu(&self, op: &'static str) -> Result<CpuStorage> {
        let dev = &self.buf.dev;
        let mut out = CpuStorage::zeros(self.dtype, self.len);
        if self.len == 0 {
            return Ok(out);
        }
        dev.bind(op)?;
        fn download<T: Element>(
            dev: &CudaDevice,
            op: &'static str,
            src: sys::CUdeviceptr,
            dst: &mut [T],
        ) -> Result<()> {
            // SAFETY: `dst` has exactly as many bytes as the buffer's elements; the stream is
            // synchronized before `dst` is read or dropped. Bool is read as bytes below.
            unsafe { dres::memcpy_dtoh_async(dst, src, dev.stream.cu_stream()) }
                .map_err(|e| dev.err(op, format!("device-to-host copy: {e}")))?;
            dev.synchronize(op)
        }
        if let CpuStorage::Bool(b) = &mut out {
            let mut bytes = vec![0u8; self.len];
            download(dev, op, self.ptr(), &mut bytes)?;
            for (d, s) in b.iter_mut().zip(bytes) {
                *d = s != 0;
            }
            return Ok(out);
        }
        match_cpu_storage!(&mut out, v => download(dev, op, self.ptr(), v.as_mut_slice())?);
        Ok(out)
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device holding the memory.
    pub fn device(&self) -> Device {
        Device::Cuda(self.buf.dev.ordinal)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the elements (not of the whole block).
    pub(crate) fn num_bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// The device address of element 0.
    pub(crate) fn ptr(&self) -> sys::CUdeviceptr {
        self.buf.ptr
    }

    /// The device address of element `offset`.
    pub(crate) fn ptr_at(&self, offset: usize) -> sys::CUdeviceptr {
        self.buf.ptr + (offset * self.dtype.size_in_bytes()) as u64
    }

    pub(crate) fn dev(&self) -> &Arc<CudaDevice> {
        &self.buf.dev
    }

    /// Makes the memory owned by this storage alone (copying it on the device when another
    /// tensor shares it), so that it can be written in place.
    pub(crate) fn make_unique(&mut self, op: &'static str) -> Result<()> {
        if Arc::strong_count(&self.buf) == 1 {
            return Ok(());
        }
        let dev = self.buf.dev.clone();
        let fresh = Self::alloc(&dev, op, self.dtype, self.len)?;
        if self.len > 0 {
            dev.bind(op)?;
            // SAFETY: both blocks hold at least `num_bytes` bytes; stream-ordered.
            unsafe {
                dres::memcpy_dtod_async(
                    fresh.ptr(),
                    self.ptr(),
                    self.num_bytes(),
                    dev.stream.cu_stream(),
                )
            }
            .map_err(|e| dev.err(op, format!("device copy: {e}")))?;
        }
        *self = fresh;
        Ok(())
    }
}

/// The CUDA storage of a tensor, or an error naming the op when it is elsewhere.
pub(crate) fn cuda_of<'a>(t: &'a crate::Tensor, op: &'static str) -> Result<&'a CudaStorage> {
    match &**t.storage() {
        crate::Storage::Cuda(s) => Ok(s),
        #[allow(unreachable_patterns)]
        _ => Err(Error::DeviceMismatch {
            op,
            lhs: Device::Cuda(0),
            rhs: t.device(),
        }),
    }
}
