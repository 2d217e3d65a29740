//! NVRTC compilation of kernel sources for the device's compute capability, with a module
//! cache keyed by (architecture, source), and the launch geometry shared by the kernels.

use super::device::{lock, nvrtc_present, CudaDevice};
use super::source::COMMON_HEADER;
use crate::Result;
use cudarc::driver::{CudaFunction, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Threads per block of the elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// A grid-stride launch over `n` elements.
pub(crate) fn grid(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` threads per row, for `rows` rows (row-wise reductions).
pub(crate) fn per_row(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, i32::MAX as usize) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `defines` + the shared header + `body`: a complete source for NVRTC.
pub(crate) fn assemble(defines: &str, body: &str) -> String {
    let mut s = String::with_capacity(defines.len() + COMMON_HEADER.len() + body.len() + 2);
    s.push_str(defines);
    s.push_str(COMMON_HEADER);
    s.push('\n');
    s.push_str(body);
    s
}

/// The kernel `name` of the module compiled from `source()`, cached under `key` (a short
/// string naming the family, dtypes and op: the source is generated only on a miss, then
/// compiled once per device architecture and source text).
pub(crate) fn function(
    dev: &CudaDevice,
    op: &'static str,
    key: &str,
    name: &str,
    source: impl FnOnce() -> String,
) -> Result<CudaFunction> {
    let fkey = format!("{key}#{name}");
    if let Some(f) = lock(&dev.functions).get(&fkey) {
        return Ok(f.clone());
    }
    let src = source();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    src.hash(&mut h);
    let mkey = (dev.arch.clone(), h.finish());
    let cached = lock(&dev.modules).get(&mkey).cloned();
    let module = match cached {
        Some(m) => m,
        None => {
            if !nvrtc_present() {
                return Err(dev.err(
                    op,
                    "the NVRTC library (libnvrtc) could not be loaded: it compiles Tandem's CUDA kernels at run time; install the CUDA runtime libraries or add them to LD_LIBRARY_PATH",
                ));
            }
            let opts = CompileOptions {
                options: vec![format!("--gpu-architecture={}", dev.arch)],
                ..Default::default()
            };
            let ptx = catch_unwind(AssertUnwindSafe(|| compile_ptx_with_opts(&src, opts)))
                .map_err(|_| dev.err(op, "NVRTC could not be loaded"))?
                .map_err(|e| dev.err(op, format!("compiling kernel `{key}` failed: {e}")))?;
            dev.bind(op)?;
            let m = dev
                .ctx
                .load_module(ptx)
                .map_err(|e| dev.err(op, format!("loading kernel `{key}`: {e}")))?;
            lock(&dev.modules).insert(mkey, m.clone());
            m
        }
    };
    let f = module
        .load_function(name)
        .map_err(|e| dev.err(op, format!("kernel `{name}` of `{key}`: {e}")))?;
    lock(&dev.functions).insert(fkey, f.clone());
    Ok(f)
}

/// The number of modules compiled on a device so far.
pub(crate) fn module_count(dev: &CudaDevice) -> usize {
    lock(&dev.modules).len()
}
