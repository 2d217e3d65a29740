//! Pinned (page-locked) host buffers that stage host-to-device copies.
//!
//! A copy from ordinary (pageable) host memory cannot run asynchronously: the driver stages it
//! itself and the caller must wait before the source may change. Tandem instead copies the
//! bytes into a pinned buffer (a plain `memcpy` on the host), queues the DMA from that buffer on
//! the device's stream and returns at once; an event recorded after the DMA says when the buffer
//! may be reused. So a batch handed to the GPU (by the training loop, or ahead of time by the
//! `DataLoader`'s worker thread) never waits for the kernels already queued, and the transfer
//! runs at the bandwidth of pinned memory.
//!
//! Buffers are kept and reused (a freed buffer whose event has completed serves any copy that
//! fits), up to [`MAX_PINNED_BYTES`] per device; past that, or when pinned memory cannot be
//! allocated, copies fall back to the synchronous path.

use super::device::{lock, CudaDevice};
use crate::Result;
use cudarc::driver::{result as dres, sys};
use std::sync::Mutex;

/// Most pinned bytes one device keeps for staging.
pub(crate) const MAX_PINNED_BYTES: usize = 256 << 20;

/// Smallest staging buffer (smaller copies share buffers of this size).
const MIN_BUFFER: usize = 64 << 10;

/// One page-locked buffer and the event recorded after its last DMA.
struct Buffer {
    ptr: *mut u8,
    capacity: usize,
    done: sys::CUevent,
}

// SAFETY: the pointer is page-locked host memory owned by this buffer and the event a driver
// handle; a buffer is used by one thread at a time (it is taken out of the pool while in use).
unsafe impl Send for Buffer {}

/// The pool of a device.
#[derive(Default)]
pub(crate) struct Staging {
    free: Mutex<Vec<Buffer>>,
    /// Pinned bytes allocated so far (in the pool or in use).
    allocated: Mutex<usize>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staging({} pinned bytes)", *lock(&self.allocated))
    }
}

impl Staging {
    /// A buffer of at least `bytes` whose previous DMA has finished: a pooled one, or a new one
    /// while the budget allows. `None` means: copy synchronously.
    fn take(&self, dev: &CudaDevice, bytes: usize) -> Option<Buffer> {
        {
            let mut free = lock(&self.free);
            // SAFETY: each event is a live handle created by `allocate`; querying it only reads
            // its state (NOT_READY is an error value, meaning the DMA is still running).
            let ready = free
                .iter()
                .position(|b| b.capacity >= bytes && unsafe { dres::event::query(b.done) }.is_ok());
            if let Some(i) = ready {
                return Some(free.swap_remove(i));
            }
        }
        let capacity = bytes.next_power_of_two().max(MIN_BUFFER);
        {
            let mut allocated = lock(&self.allocated);
            if *allocated + capacity > MAX_PINNED_BYTES {
                return None;
            }
            *allocated += capacity;
        }
        let buffer = allocate(dev, capacity);
        if buffer.is_none() {
            *lock(&self.allocated) -= capacity;
        }
        buffer
    }

    /// Copies `src` to the device block at `dst` through a pinned buffer, asynchronously on the
    /// device's stream. Returns `Ok(false)` when no pinned buffer is available: the caller then
    /// copies synchronously.
    pub(crate) fn upload(
        &self,
        dev: &CudaDevice,
        op: &'static str,
        dst: sys::CUdeviceptr,
        src: &[u8],
    ) -> Result<bool> {
        let Some(buffer) = self.take(dev, src.len()) else {
            return Ok(false);
        };
        // SAFETY: the buffer holds `capacity >= src.len()` bytes of page-locked memory that no
        // DMA reads any more (its event completed, or it is new) and no other thread holds.
        let staged = unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), buffer.ptr, src.len());
            std::slice::from_raw_parts(buffer.ptr.cast_const(), src.len())
        };
        // SAFETY: `dst` is a device block of at least `src.len()` bytes; the staged bytes stay
        // untouched until the event recorded right after the copy completes (the buffer only
        // returns to use once `query` reports that).
        let queued = unsafe {
            dres::memcpy_htod_async(dst, staged, dev.stream.cu_stream())
                .and_then(|()| dres::event::record(buffer.done, dev.stream.cu_stream()))
        };
        let result = queued.map_err(|e| dev.err(op, format!("host-to-device copy: {e}")));
        if result.is_err() {
            // The DMA may or may not have been queued: wait for the stream before the buffer can
            // be reused (an error here is the one already being returned).
            let _ = dev.synchronize(op);
        }
        lock(&self.free).push(buffer);
        result.map(|()| true)
    }
}

/// A new pinned buffer with its event, or `None` when the driver refuses.
fn allocate(dev: &CudaDevice, capacity: usize) -> Option<Buffer> {
    dev.bind("pinned staging").ok()?;
    let done = dres::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING).ok()?;
    // SAFETY: asks the driver for `capacity` bytes of page-locked host memory (flags 0: portable
    // to this context only); the bytes are written before they are read.
    match unsafe { dres::malloc_host(capacity, 0) } {
        Ok(ptr) if !ptr.is_null() => Some(Buffer {
            ptr: ptr.cast(),
            capacity,
            done,
        }),
        _ => {
            // SAFETY: the event was created above and is not used elsewhere.
            let _ = unsafe { dres::event::destroy(done) };
            None
        }
    }
}
