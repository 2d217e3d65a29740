//! Per-ordinal CUDA devices: driver detection, the lazily created context and its one stream,
//! the caching allocator, the NVRTC module cache and the cuBLAS handle.

use super::bucket::{bucket_size, AllocStats, BlockCache};
use crate::{Device, Error, Result};
use cudarc::driver::{result as dres, sys, CudaContext, CudaFunction, CudaModule, CudaStream};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The message of every "no driver" error.
pub const NO_DRIVER: &str = "CUDA requested, no driver found";

/// True when the CUDA driver library can be loaded. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names and drops it again.
    catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false)
}

/// True when the NVRTC library (kernel compiler) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: as in `driver_present`.
    catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// True when the cuBLAS library can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: as in `driver_present`.
    catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false)
}

/// The error for a device that cannot be used because no driver library loads.
pub fn no_driver_error(device: Device) -> Error {
    Error::DeviceUnavailable {
        device,
        reason: format!(
            "{NO_DRIVER} (the NVIDIA driver library libcuda could not be loaded; install the driver, or check LD_LIBRARY_PATH)"
        ),
    }
}

/// Locks a mutex, recovering from a poisoned one (the data is plain bookkeeping).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One GPU: context, stream, allocator, compiled kernels, cuBLAS.
pub(crate) struct CudaDevice {
    pub(crate) ordinal: usize,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    /// `compute_XY` of the device, passed to NVRTC.
    pub(crate) arch: String,
    pub(crate) cache: Mutex<BlockCache<sys::CUdeviceptr>>,
    /// Compiled modules by (arch, source hash); functions by `key#name`.
    pub(crate) modules: Mutex<HashMap<(String, u64), Arc<CudaModule>>>,
    pub(crate) functions: Mutex<HashMap<String, CudaFunction>>,
    pub(crate) blas: Mutex<Option<cudarc::cublas::CudaBlas>>,
    /// Pinned host buffers that stage host-to-device copies.
    pub(crate) staging: super::staging::Staging,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {})", self.ordinal, self.arch)
    }
}

fn registry() -> &'static Mutex<HashMap<usize, Arc<CudaDevice>>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Number of CUDA devices, or the no-driver error.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(no_driver_error(Device::Cuda(0)));
    }
    match catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) => Ok(n.max(0) as usize),
        Ok(Err(e)) => Err(Error::DeviceUnavailable {
            device: Device::Cuda(0),
            reason: format!("the CUDA driver failed to initialize: {e}"),
        }),
        Err(_) => Err(no_driver_error(Device::Cuda(0))),
    }
}

/// The device of `ordinal`, created on first use.
pub(crate) fn get(ordinal: usize) -> Result<Arc<CudaDevice>> {
    if let Some(d) = lock(registry()).get(&ordinal) {
        return Ok(d.clone());
    }
    let device = Device::Cuda(ordinal);
    let count = device_count()?;
    if ordinal >= count {
        return Err(Error::DeviceUnavailable {
            device,
            reason: format!("there are {count} CUDA devices"),
        });
    }
    let init = catch_unwind(AssertUnwindSafe(|| {
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.new_stream()?;
        let cc = ctx.compute_capability()?;
        Ok::<_, dres::DriverError>((ctx, stream, cc))
    }));
    let (ctx, stream, (major, minor)) = match init {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(Error::DeviceUnavailable {
                device,
                reason: format!("creating the CUDA context failed: {e}"),
            })
        }
        Err(_) => return Err(no_driver_error(device)),
    };
    let dev = Arc::new(CudaDevice {
        ordinal,
        ctx,
        stream,
        arch: format!("compute_{major}{minor}"),
        cache: Mutex::new(BlockCache::new()),
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        blas: Mutex::new(None),
        staging: Default::default(),
    });
    let mut reg = lock(registry());
    Ok(reg.entry(ordinal).or_insert(dev).clone())
}

impl CudaDevice {
    /// The `Device` value.
    pub(crate) fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// An error naming the op and this device.
    pub(crate) fn err(&self, op: &'static str, msg: impl std::fmt::Display) -> Error {
        Error::Backend {
            op,
            device: self.device(),
            msg: msg.to_string(),
        }
    }

    /// Makes this device's context current on the calling thread.
    pub(crate) fn bind(&self, op: &'static str) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| self.err(op, format!("binding the context: {e}")))
    }

    /// Waits for all work queued on the stream.
    pub(crate) fn synchronize(&self, op: &'static str) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.err(op, format!("kernel or copy failed: {e}")))
    }

    /// A device block of at least `bytes` bytes: from the cache when a freed block of the same
    /// bucket exists, otherwise from the driver (emptying the cache and retrying once when the
    /// driver is out of memory).
    pub(crate) fn alloc_raw(
        &self,
        op: &'static str,
        bytes: usize,
    ) -> Result<(sys::CUdeviceptr, usize)> {
        let bucket = bucket_size(bytes);
        if let Some(p) = lock(&self.cache).take(bucket) {
            return Ok((p, bucket));
        }
        self.bind(op)?;
        // SAFETY: the context is current; the block is returned uninitialized and every user
        // writes it before reading.
        let first = unsafe { dres::malloc_sync(bucket) };
        let ptr = match first {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                self.empty_cache(op)?;
                // SAFETY: as above.
                unsafe { dres::malloc_sync(bucket) }.map_err(|e| {
                    let s = self.stats();
                    self.err(
                        op,
                        format!(
                            "out of memory allocating {bytes} bytes ({} bytes in use by tensors): {e}",
                            s.in_use_bytes
                        ),
                    )
                })?
            }
            Err(e) => return Err(self.err(op, format!("allocating {bytes} bytes: {e}"))),
        };
        lock(&self.cache).record_new(bucket);
        Ok((ptr, bucket))
    }

    /// Returns a block to the cache (called when a buffer is dropped).
    pub(crate) fn release(&self, ptr: sys::CUdeviceptr, bucket: usize) {
        lock(&self.cache).give_back(bucket, ptr);
    }

    /// Frees every cached block back to the driver.
    pub(crate) fn empty_cache(&self, op: &'static str) -> Result<()> {
        self.synchronize(op)?;
        let blocks = lock(&self.cache).drain();
        self.bind(op)?;
        for (_, p) in blocks {
            // SAFETY: cached blocks are owned by no tensor and no queued work uses them (the
            // stream was synchronized above).
            unsafe { dres::free_sync(p) }.map_err(|e| self.err(op, format!("freeing: {e}")))?;
        }
        Ok(())
    }

    /// The allocator's counters.
    pub(crate) fn stats(&self) -> AllocStats {
        lock(&self.cache).stats()
    }
}
