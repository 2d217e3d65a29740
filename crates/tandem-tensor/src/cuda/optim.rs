//! Fused optimizer updates on CUDA (Adam/AdamW, SGD with momentum/Nesterov, RMSprop), in
//! place on uniquely owned device memory (copy-on-write like the CPU path). Arguments are
//! validated by `ops/optim.rs` before these run.

use super::compile::{assemble, function, grid};
use super::device::CudaDevice;
use super::elementwise::{launch, same_device};
use super::source::dtype_defines;
use super::storage::cuda_of;
use crate::ops::optim::{AdamConfig, RmsPropConfig, SgdConfig};
use crate::{DType, Result, Storage, Tensor};
use cudarc::driver::{CudaFunction, PushKernelArg};

const BODY: &str = include_str!("kernels/optim.cu");

fn kernel(dev: &CudaDevice, op: &'static str, dtype: DType, name: &str) -> Result<CudaFunction> {
    function(dev, op, &format!("optim:{dtype}"), name, || {
        optim_source(dtype)
    })
}

/// Makes `t` contiguous and the sole owner of its device memory; returns its address.
fn writable(t: &mut Tensor, op: &'static str) -> Result<u64> {
    match t.storage_mut()? {
        Storage::Cuda(s) => {
            s.make_unique(op)?;
            Ok(s.ptr())
        }
        #[allow(unreachable_patterns)]
        _ => Err(crate::Error::DeviceMismatch {
            op,
            lhs: crate::Device::Cuda(0),
            rhs: crate::Device::Cpu,
        }),
    }
}

/// A readable contiguous copy (or view) of `t` and its address.
fn readable(t: &Tensor, op: &'static str) -> Result<(Tensor, u64)> {
    let c = t.contiguous()?;
    let p = cuda_of(&c, op)?.ptr_at(c.layout().offset());
    Ok((c, p))
}

/// Adam/AdamW on CUDA (`bc1` and `bc2_sqrt` are the bias corrections of this step).
pub(crate) fn adam(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    bc1: f64,
    bc2_sqrt: f64,
    c: &AdamConfig,
) -> Result<()> {
    const OP: &str = "adam_step";
    let dev = same_device(OP, &[param, grad, m, v])?;
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let f = kernel(&dev, OP, param.dtype(), "tdm_adam")?;
    let (_g, pg) = readable(grad, OP)?;
    let (pp, pm, pv) = (writable(param, OP)?, writable(m, OP)?, writable(v, OP)?);
    let n64 = n as i64;
    let step_size = c.lr / bc1;
    let decay = 1.0 - c.lr * c.weight_decay;
    let decoupled = (c.decoupled && c.weight_decay != 0.0) as i32;
    let l2 = (!c.decoupled && c.weight_decay != 0.0) as i32;
    launch!(
        dev,
        OP,
        f,
        grid(n),
        &pp,
        &pg,
        &pm,
        &pv,
        &n64,
        &c.beta1,
        &c.beta2,
        &step_size,
        &bc2_sqrt,
        &c.eps,
        &c.weight_decay,
        &decay,
        &decoupled,
        &l2
    )
}

/// SGD (with optional momentum buffer) on CUDA.
pub(crate) fn sgd(
    param: &mut Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&mut Tensor>,
    first_step: bool,
    c: &SgdConfig,
) -> Result<()> {
    const OP: &str = "sgd_step";
    let mut operands: Vec<&Tensor> = vec![param, grad];
    let buf = momentum_buffer.filter(|_| c.momentum != 0.0);
    if let Some(b) = &buf {
        operands.push(b);
    }
    let dev = same_device(OP, &operands)?;
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let f = kernel(&dev, OP, param.dtype(), "tdm_sgd")?;
    let (_g, pg) = readable(grad, OP)?;
    let pp = writable(param, OP)?;
    let pb = match buf {
        Some(b) => writable(b, OP)?,
        None => 0u64,
    };
    let n64 = n as i64;
    let (nesterov, first) = (c.nesterov as i32, first_step as i32);
    launch!(
        dev,
        OP,
        f,
        grid(n),
        &pp,
        &pg,
        &pb,
        &n64,
        &c.lr,
        &c.momentum,
        &c.dampening,
        &c.weight_decay,
        &nesterov,
        &first
    )
}

/// RMSprop on CUDA.
pub(crate) fn rmsprop(
    param: &mut Tensor,
    grad: &Tensor,
    square_avg: &mut Tensor,
    momentum_buffer: Option<&mut Tensor>,
    grad_avg: Option<&mut Tensor>,
    c: &RmsPropConfig,
) -> Result<()> {
    const OP: &str = "rmsprop_step";
    let buf = momentum_buffer.filter(|_| c.momentum != 0.0);
    let gavg = grad_avg.filter(|_| c.centered);
    let mut operands: Vec<&Tensor> = vec![param, grad, square_avg];
    if let Some(b) = &buf {
        operands.push(b);
    }
    if let Some(b) = &gavg {
        operands.push(b);
    }
    let dev = same_device(OP, &operands)?;
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let f = kernel(&dev, OP, param.dtype(), "tdm_rmsprop")?;
    let (_g, pg) = readable(grad, OP)?;
    let pp = writable(param, OP)?;
    let ps = writable(square_avg, OP)?;
    let pb = match buf {
        Some(b) => writable(b, OP)?,
        None => 0u64,
    };
    let pa = match gavg {
        Some(b) => writable(b, OP)?,
        None => 0u64,
    };
    let n64 = n as i64;
    launch!(
        dev,
        OP,
        f,
        grid(n),
        &pp,
        &pg,
        &ps,
        &pb,
        &pa,
        &n64,
        &c.lr,
        &c.alpha,
        &c.eps,
        &c.weight_decay,
        &c.momentum
    )
}

/// Source of the optimizer kernels on `dtype` (f32 or f64).
pub(crate) fn optim_source(dtype: DType) -> String {
    // The smallest normal number, written from Rust's own constant (shortest round trip).
    let (sqrt, tiny) = if dtype == DType::F64 {
        ("sqrt", format!("{:e}", f64::MIN_POSITIVE))
    } else {
        ("sqrtf", format!("{:e}f", f32::MIN_POSITIVE))
    };
    // TDM_FLUSH: the CPU kernels' flush of subnormal optimizer state (ops/optim.rs).
    let d = format!(
        "{}#define TDM_SQRT(x) {sqrt}(x)\n#define TDM_TINY ((A_C){tiny})\n\
         #define TDM_FLUSH_BELOW(x, t) (((x) < (t) && -(x) < (t)) ? (A_C)0 : (x))\n\
         #define TDM_FLUSH(x) TDM_FLUSH_BELOW(x, TDM_TINY)\n",
        dtype_defines("A", dtype)
    );
    assemble(&d, BODY)
}
