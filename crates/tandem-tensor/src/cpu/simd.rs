//! Run-time instruction-set dispatch.
//!
//! Kernels are written as plain loops over slices (`#[inline(always)]` helpers) and called
//! through [`dispatch`], which runs them inside a function compiled for AVX-512 or AVX2+FMA
//! when the CPU has it, so the compiler vectorizes the same source for each instruction set.
//! One binary runs on any x86-64 (and builds on other architectures, where the plain version
//! runs). `TANDEM_ISA=scalar|avx2|avx512` caps the level, for tests and comparisons.

use std::sync::atomic::{AtomicU8, Ordering};

/// Instruction-set levels the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Baseline code for the target (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// x86-64-v3: AVX2 + FMA + F16C.
    Avx2,
    /// x86-64-v4: AVX-512 (F, BW, DQ, VL).
    Avx512,
}

static LEVEL: AtomicU8 = AtomicU8::new(0);

fn detect() -> Isa {
    // The first kernel of the process: also the place to set up host allocation.
    super::alloc::keep_freed_memory();
    #[cfg(target_arch = "x86_64")]
    let best = if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("fma")
    {
        Isa::Avx512
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        Isa::Avx2
    } else {
        Isa::Baseline
    };
    #[cfg(not(target_arch = "x86_64"))]
    let best = Isa::Baseline;
    let cap = match std::env::var("TANDEM_ISA").as_deref() {
        Ok("scalar") | Ok("baseline") => Isa::Baseline,
        Ok("avx2") => Isa::Avx2,
        _ => Isa::Avx512,
    };
    best.min(cap)
}

/// The instruction set the kernels use on this machine (detected once).
#[inline]
pub fn isa() -> Isa {
    match LEVEL.load(Ordering::Relaxed) {
        1 => Isa::Baseline,
        2 => Isa::Avx2,
        3 => Isa::Avx512,
        _ => {
            let l = detect();
            LEVEL.store(
                match l {
                    Isa::Baseline => 1,
                    Isa::Avx2 => 2,
                    Isa::Avx512 => 3,
                },
                Ordering::Relaxed,
            );
            l
        }
    }
}

/// Runs `f` compiled for the best instruction set of this CPU. `f` should be a closure whose
/// body calls `#[inline(always)]` loop helpers, so that they are compiled inside the
/// feature-enabled function.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` only reports a level whose features the CPU has.
        Isa::Avx512 => unsafe { run_avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { run_avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(
    enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt"
)]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,bmi1,bmi2,lzcnt,popcnt")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether the kernels run their AVX-512 code on this machine ([`isa`] reports AVX-512 on
/// x86-64 only).
#[inline]
pub fn avx512() -> bool {
    isa() == Isa::Avx512
}

/// Elements above which kernels split work across the rayon thread pool.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;

/// Number of chunks to split `n` elements into for parallel work (1 when small).
pub fn parallel_chunks(n: usize) -> usize {
    if n < PARALLEL_THRESHOLD {
        1
    } else {
        let threads = rayon::current_num_threads().max(1);
        (n / (PARALLEL_THRESHOLD / 2)).clamp(1, threads * 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_runs_the_closure() {
        let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let s: f32 = dispatch(|| v.iter().sum());
        assert_eq!(s, 4950.0);
        assert!(isa() >= Isa::Baseline);
    }
}
