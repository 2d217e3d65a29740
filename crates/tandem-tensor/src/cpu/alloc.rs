//! How freed host buffers go back to the allocator.
//!
//! A training step allocates and frees the same large buffers (activations, gradients,
//! im2col matrices) every step. With glibc's default settings, buffers above the `mmap`
//! threshold are unmapped when freed and the top of the heap is trimmed, so the next step
//! maps fresh pages and pays a page fault per 4 KiB page it touches. Measured on a 2-core
//! virtual machine with `perf stat -e page-faults` around `cargo run --release --example
//! profile_step -- lenet 64 300`: about 1,100 page faults per LeNet-5 training step and
//! 5.5-5.7 ms per step with glibc's defaults, 2.8-3.5 ms with this setting (the same
//! thresholds given through `GLIBC_TUNABLES` brought the faults down to 5 per step).
//!
//! [`keep_freed_memory`] (run once, at the first kernel) raises glibc's `mmap` threshold to
//! its maximum (32 MiB) and its trim threshold to [`TRIM_THRESHOLD`], so freed buffers are
//! reused by the next allocation instead of going back to the kernel: the resident memory of a
//! training loop stays at its high-water mark, the same trade PyTorch's and TensorFlow's caching
//! allocators make. Setting `TANDEM_KEEP_FREED_MEMORY=0` leaves malloc as it is. Other
//! platforms and allocators are left alone (a program that installs its own global allocator
//! keeps its own policy, and glibc settings do not affect it).

use std::sync::Once;

/// Free memory at the top of the heap glibc keeps instead of returning it (1 GiB).
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// The largest `mmap` threshold glibc accepts on 64-bit targets (32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;

static TUNED: Once = Once::new();

/// Makes glibc keep freed buffers for reuse (see the module documentation); runs once, does
/// nothing when `TANDEM_KEEP_FREED_MEMORY=0` or off glibc. Returns whether the settings were
/// applied by this process.
pub fn keep_freed_memory() -> bool {
    static APPLIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    TUNED.call_once(|| {
        let off = std::env::var("TANDEM_KEEP_FREED_MEMORY").is_ok_and(|v| v.trim() == "0");
        if !off && apply() {
            APPLIED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    APPLIED.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // glibc's <malloc.h>: int mallopt(int param, int value).
    const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
    const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    // SAFETY: `mallopt` only changes allocator parameters; both values are in the ranges glibc
    // documents (it returns 0 and changes nothing for a value it rejects).
    unsafe {
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD as std::os::raw::c_int) == 1
            && mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD as std::os::raw::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_apply_once_on_glibc() {
        let first = keep_freed_memory();
        assert_eq!(
            keep_freed_memory(),
            first,
            "the second call changes nothing"
        );
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var("TANDEM_KEEP_FREED_MEMORY").as_deref() != Ok("0")
        {
            assert!(first, "glibc accepted the thresholds");
        }
    }
}
