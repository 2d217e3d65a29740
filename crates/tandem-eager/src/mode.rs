//! Thread-local grad mode (`no_grad`, `enable_grad`) and anomaly detection switches.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static ANOMALY: Cell<bool> = const { Cell::new(false) };
}

static ANOMALY_GLOBAL: AtomicBool = AtomicBool::new(false);

/// True when ops run on this thread are recorded for autograd (the default).
#[inline]
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Restores the previous grad mode of this thread when dropped.
#[must_use = "grad mode is restored when the guard is dropped"]
#[derive(Debug)]
pub struct GradModeGuard {
    prev: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Sets this thread's grad mode until the returned guard is dropped.
pub fn set_grad_enabled(on: bool) -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard { prev }
}

/// Like `with torch.no_grad():` — ops run while the guard lives are not recorded.
///
/// ```
/// use tandem_eager::{no_grad, Tensor};
/// let w = Tensor::ones(&[2], tandem_eager::DType::F32).requires_grad_(true);
/// let y = {
///     let _g = no_grad();
///     (&w * 2.0).unwrap()
/// };
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Like `with torch.enable_grad():` — turns recording back on inside a `no_grad` scope.
pub fn enable_grad() -> GradModeGuard {
    set_grad_enabled(true)
}

/// True when anomaly detection is on for this thread (or globally).
#[inline]
pub fn is_anomaly_enabled() -> bool {
    ANOMALY.with(Cell::get) || ANOMALY_GLOBAL.load(Ordering::Relaxed)
}

/// Turns anomaly detection on or off for the whole process (`torch.autograd.set_detect_anomaly`).
pub fn set_detect_anomaly(on: bool) {
    ANOMALY_GLOBAL.store(on, Ordering::Relaxed);
}

/// Restores the previous anomaly mode of this thread when dropped.
#[must_use = "anomaly mode is restored when the guard is dropped"]
#[derive(Debug)]
pub struct AnomalyGuard {
    prev: bool,
}

impl Drop for AnomalyGuard {
    fn drop(&mut self) {
        ANOMALY.with(|a| a.set(self.prev));
    }
}

/// Like `with torch.autograd.detect_anomaly():` — every op (forward and backward) checks its
/// float output for NaN and infinity, and the first one that produces such a value fails with
/// [`tandem_tensor::Error::Anomaly`] naming the op.
pub fn detect_anomaly() -> AnomalyGuard {
    let prev = ANOMALY.with(|a| a.replace(true));
    AnomalyGuard { prev }
}
