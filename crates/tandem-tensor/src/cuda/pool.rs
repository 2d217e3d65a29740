//! 2-D max and average pooling on CUDA and their gradients (f32 and f64 kernels; f16 and
//! bf16 are computed in f32 like on the CPU). Geometry is checked by `ops/pool.rs`.

use super::compile::{assemble, function, grid};
use super::elementwise::{launch, same_device, wrap};
use super::source::dtype_defines;
use super::storage::{cuda_of, CudaStorage};
use crate::cpu::pool::PoolGeom;
use crate::{DType, Error, Result, Tensor};
use cudarc::driver::PushKernelArg;

const BODY: &str = include_str!("kernels/pool.cu");

/// Geometry passed by value, laid out like `struct PoolArgs` in `kernels/pool.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PoolArgs {
    planes: i64,
    h: i64,
    w: i64,
    oh: i64,
    ow: i64,
    kh: i64,
    kw: i64,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    dh: i64,
    dw: i64,
    count_include_pad: i64,
}

// SAFETY: `repr(C)`, 64-bit integers only, matching `struct PoolArgs` field for field.
unsafe impl cudarc::driver::DeviceRepr for PoolArgs {}

fn args(g: &PoolGeom) -> PoolArgs {
    let p = &g.params;
    PoolArgs {
        planes: g.planes as i64,
        h: g.h as i64,
        w: g.w as i64,
        oh: g.oh as i64,
        ow: g.ow as i64,
        kh: p.kernel[0] as i64,
        kw: p.kernel[1] as i64,
        sh: p.stride[0] as i64,
        sw: p.stride[1] as i64,
        ph: p.padding[0] as i64,
        pw: p.padding[1] as i64,
        dh: p.dilation[0] as i64,
        dw: p.dilation[1] as i64,
        count_include_pad: p.count_include_pad as i64,
    }
}

/// Which pooling kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolKind {
    /// Max pooling forward.
    Max,
    /// Max pooling gradient (inputs: grad_out, input).
    MaxBackward,
    /// Average pooling forward.
    Avg,
    /// Average pooling gradient (input: grad_out).
    AvgBackward,
}

/// Runs a pooling kernel on `inputs` (all of one float dtype), giving `out_shape`.
pub(crate) fn pool(
    op: &'static str,
    kind: PoolKind,
    inputs: &[&Tensor],
    g: &PoolGeom,
    out_shape: &[usize],
) -> Result<Tensor> {
    let dev = same_device(op, inputs)?;
    let dtype = inputs.first().map_or(DType::F32, |t| t.dtype());
    if let Some(t) = inputs
        .iter()
        .find(|t| t.dtype() != dtype || !dtype.is_float())
    {
        return Err(Error::DTypeMismatch {
            op,
            expected: "one float dtype for every operand".into(),
            got: t.dtype(),
        });
    }
    if matches!(dtype, DType::F16 | DType::BF16) {
        let wide: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.cast(DType::F32))
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = wide.iter().collect();
        return pool(op, kind, &refs, g, out_shape)?.cast(dtype);
    }
    let held: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.contiguous())
        .collect::<Result<_>>()?;
    let ptrs: Vec<u64> = held
        .iter()
        .map(|t| cuda_of(t, op).map(|s| s.ptr_at(t.layout().offset())))
        .collect::<Result<_>>()?;
    let n: usize = out_shape.iter().product();
    let backward = matches!(kind, PoolKind::MaxBackward | PoolKind::AvgBackward);
    let out = if backward {
        CudaStorage::zeros(&dev, op, dtype, n)?
    } else {
        CudaStorage::alloc(&dev, op, dtype, n)?
    };
    let work = g.planes * g.oh * g.ow;
    if work > 0 && n > 0 {
        let name = match kind {
            PoolKind::Max => "tdm_max_pool",
            PoolKind::MaxBackward => "tdm_max_pool_backward",
            PoolKind::Avg => "tdm_avg_pool",
            PoolKind::AvgBackward => "tdm_avg_pool_backward",
        };
        let f = function(&dev, op, &format!("pool:{dtype}"), name, || {
            pool_source(dtype)
        })?;
        let a = args(g);
        let o = out.ptr();
        let p0 = ptrs.first().copied().unwrap_or(0);
        match kind {
            PoolKind::MaxBackward => {
                let p1 = ptrs.get(1).copied().unwrap_or(0);
                launch!(dev, op, f, grid(work), &o, &p0, &p1, &a)?
            }
            _ => launch!(dev, op, f, grid(work), &o, &p0, &a)?,
        }
    }
    drop(held);
    wrap(out, out_shape)
}

/// Source of the pooling kernels on `dtype` (f32 or f64).
pub(crate) fn pool_source(dtype: DType) -> String {
    let inf = if dtype == DType::F64 {
        "__longlong_as_double(0x7ff0000000000000LL)"
    } else {
        "__int_as_float(0x7f800000)"
    };
    assemble(
        &format!("{}#define TDM_INF {inf}\n", dtype_defines("A", dtype)),
        BODY,
    )
}
