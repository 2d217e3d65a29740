//! Elementwise CUDA ops: strided copies, fills, casts, unary and binary ops with NumPy
//! broadcasting over arbitrary strides, `where`, and fused elementwise programs.

use super::compile::{assemble, function, grid};
use super::device::CudaDevice;
use super::meta::{coalesce, Strided};
use super::source::{binary_expr, dtype_defines, raw_type, unary_expr, FusedProgram};
use super::storage::{cuda_of, CudaStorage};
use crate::layout::broadcast_shapes;
use crate::{BinaryOp, DType, Device, Error, Layout, Result, Storage, Tensor, UnaryOp};
use cudarc::driver::PushKernelArg;
use std::sync::Arc;

const BODY: &str = include_str!("kernels/elementwise.cu");

/// The CUDA device shared by all `tensors`, or [`Error::DeviceMismatch`] naming the op and the
/// first two devices that differ.
pub(crate) fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<Arc<CudaDevice>> {
    let first = tensors
        .first()
        .ok_or_else(|| Error::invalid(op, "no operand"))?;
    for t in tensors {
        if t.device() != first.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: first.device(),
                rhs: t.device(),
            });
        }
    }
    match first.device() {
        Device::Cuda(_) => Ok(cuda_of(first, op)?.dev().clone()),
        other => Err(Error::DeviceMismatch {
            op,
            lhs: other,
            rhs: Device::Cuda(0),
        }),
    }
}

/// A contiguous tensor over fresh device storage.
pub(crate) fn wrap(s: CudaStorage, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_storage(Arc::new(Storage::Cuda(s)), Layout::contiguous(shape))
}

/// Launches kernel `$f` on the device's stream with the given arguments (each a reference to
/// a `DeviceRepr` value: device pointers as `u64`, scalars of the kernel parameter's exact
/// type, `Strided` metadata), mapping a failure to an error naming the op and device.
macro_rules! launch {
    ($dev:expr, $op:expr, $f:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let dev: &$crate::cuda::device::CudaDevice = &$dev;
        dev.bind($op)?;
        let mut b = dev.stream.launch_builder(&$f);
        $( b.arg($arg); )+
        // SAFETY: callers pass device pointers to blocks large enough for every element the
        // kernel touches (the metadata was built from the tensors' own layouts) and scalars of
        // the exact types of the kernel's parameters.
        unsafe { b.launch($cfg) }
            .map(|_| ())
            .map_err(|e| dev.err($op, format!("kernel launch failed: {e}")))
    }};
}
pub(crate) use launch;

fn meta(op: &'static str, shape: &[usize], layouts: &[&Layout]) -> Result<Strided> {
    let ops: Vec<(&[usize], usize)> = layouts.iter().map(|l| (l.strides(), l.offset())).collect();
    coalesce(op, shape, &ops)
}

/// A contiguous copy of a CUDA tensor (any layout).
pub(crate) fn copy(t: &Tensor) -> Result<Tensor> {
    const OP: &str = "copy";
    let src = cuda_of(t, OP)?;
    let dev = src.dev().clone();
    let n = t.numel();
    let out = CudaStorage::alloc(&dev, OP, t.dtype(), n)?;
    if n > 0 {
        let m = meta(OP, t.shape(), &[t.layout()])?;
        let raw = raw_type(t.dtype());
        let f = function(&dev, OP, &format!("copy:{raw}"), "tdm_copy", || {
            raw_source(raw)
        })?;
        let (o, a) = (out.ptr(), src.ptr());
        launch!(dev, OP, f, grid(n), &o, &a, &m)?;
    }
    wrap(out, t.shape())
}

/// A tensor of `shape` on `dev` filled with `value` converted to `dtype`.
pub(crate) fn full(
    dev: &Arc<CudaDevice>,
    shape: &[usize],
    value: f64,
    dtype: DType,
) -> Result<Tensor> {
    const OP: &str = "full";
    let n: usize = shape.iter().product();
    if value == 0.0 {
        return wrap(CudaStorage::zeros(dev, OP, dtype, n)?, shape);
    }
    let out = CudaStorage::alloc(dev, OP, dtype, n)?;
    if n > 0 {
        let raw = raw_type(dtype);
        let f = function(dev, OP, &format!("copy:{raw}"), "tdm_fill", || {
            raw_source(raw)
        })?;
        let host = crate::CpuStorage::full(dtype, 1, value);
        let bytes = host.as_bytes();
        let o = out.ptr();
        let n64 = n as i64;
        let cfg = grid(n);
        // The value is passed with the exact width of the kernel's parameter.
        match bytes.len() {
            1 => {
                let v = bytes[0];
                launch!(dev, OP, f, cfg, &o, &v, &n64)?
            }
            2 => {
                let v = u16::from_le_bytes([bytes[0], bytes[1]]);
                launch!(dev, OP, f, cfg, &o, &v, &n64)?
            }
            4 => {
                let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                launch!(dev, OP, f, cfg, &o, &v, &n64)?
            }
            _ => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[..8]);
                let v = u64::from_le_bytes(a);
                launch!(dev, OP, f, cfg, &o, &v, &n64)?
            }
        }
    }
    wrap(out, shape)
}

/// Converts a CUDA tensor to another dtype (same rules as the CPU cast).
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "cast";
    if dtype == t.dtype() {
        return Ok(t.clone());
    }
    let src = cuda_of(t, OP)?;
    let dev = src.dev().clone();
    let n = t.numel();
    let out = CudaStorage::alloc(&dev, OP, dtype, n)?;
    if n > 0 {
        let m = meta(OP, t.shape(), &[t.layout()])?;
        let key = format!("cast:{}:{}", t.dtype(), dtype);
        let f = function(&dev, OP, &key, "tdm_cast", || cast_source(t.dtype(), dtype))?;
        let (o, a) = (out.ptr(), src.ptr());
        launch!(dev, OP, f, grid(n), &o, &a, &m)?;
    }
    wrap(out, t.shape())
}

/// Elementwise unary op on a CUDA tensor.
pub(crate) fn unary(t: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let name = op.name();
    let src = cuda_of(t, name)?;
    let dev = src.dev().clone();
    let dtype = t.dtype();
    unary_expr(op, dtype, "x").ok_or(Error::UnsupportedDType {
        op: name,
        dtype,
        device: t.device(),
    })?;
    let n = t.numel();
    let out = CudaStorage::alloc(&dev, name, dtype, n)?;
    if n > 0 {
        let m = meta(name, t.shape(), &[t.layout()])?;
        let key = format!("unary:{name}:{dtype}");
        let f = function(&dev, name, &key, "tdm_unary", || {
            unary_source(op, dtype).unwrap_or_default()
        })?;
        let (o, a) = (out.ptr(), src.ptr());
        launch!(dev, name, f, grid(n), &o, &a, &m)?;
    }
    wrap(out, t.shape())
}

/// Elementwise binary op with broadcasting (same dtype and device checked by the caller for
/// dtype; devices checked here).
pub(crate) fn binary(lhs: &Tensor, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
    let name = op.name();
    let dev = same_device(name, &[lhs, rhs])?;
    let dtype = lhs.dtype();
    binary_expr(op, dtype, "x", "y").ok_or(Error::UnsupportedDType {
        op: name,
        dtype,
        device: lhs.device(),
    })?;
    let shape = broadcast_shapes(name, lhs.shape(), rhs.shape())?;
    if op == BinaryOp::Pow && dtype.is_int() {
        let negative = rhs.reduce(
            crate::ReduceOp::Min,
            &(0..rhs.rank()).collect::<Vec<_>>(),
            false,
        );
        if rhs.numel() > 0 && negative?.item()? < 0.0 {
            return Err(Error::invalid(
                name,
                format!(
                    "{dtype} cannot be raised to negative integer powers (cast to a float dtype first)"
                ),
            ));
        }
    }
    let out_dtype = if op.is_comparison() {
        DType::Bool
    } else {
        dtype
    };
    let n: usize = shape.iter().product();
    let out = CudaStorage::alloc(&dev, name, out_dtype, n)?;
    if n > 0 {
        let la = lhs.layout().broadcast_to(&shape)?;
        let lb = rhs.layout().broadcast_to(&shape)?;
        let m = meta(name, &shape, &[&la, &lb])?;
        let key = format!("binary:{name}:{dtype}");
        let f = function(&dev, name, &key, "tdm_binary", || {
            binary_source(op, dtype).unwrap_or_default()
        })?;
        let (o, a, b2) = (
            out.ptr(),
            cuda_of(lhs, name)?.ptr(),
            cuda_of(rhs, name)?.ptr(),
        );
        launch!(dev, name, f, grid(n), &o, &a, &b2, &m)?;
    }
    wrap(out, &shape)
}

/// `cond ? on_true : on_false` with broadcasting (dtypes checked by the caller).
pub(crate) fn where_cond(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
    const OP: &str = "where";
    let dev = same_device(OP, &[cond, on_true, on_false])?;
    let shape = broadcast_shapes(OP, on_true.shape(), on_false.shape())?;
    let shape = broadcast_shapes(OP, cond.shape(), &shape)?;
    let dtype = on_true.dtype();
    let n: usize = shape.iter().product();
    let out = CudaStorage::alloc(&dev, OP, dtype, n)?;
    if n > 0 {
        let lc = cond.layout().broadcast_to(&shape)?;
        let lt = on_true.layout().broadcast_to(&shape)?;
        let lf = on_false.layout().broadcast_to(&shape)?;
        let m = meta(OP, &shape, &[&lc, &lt, &lf])?;
        let raw = raw_type(dtype);
        let f = function(&dev, OP, &format!("copy:{raw}"), "tdm_where", || {
            raw_source(raw)
        })?;
        let (o, c, t, e) = (
            out.ptr(),
            cuda_of(cond, OP)?.ptr(),
            cuda_of(on_true, OP)?.ptr(),
            cuda_of(on_false, OP)?.ptr(),
        );
        launch!(dev, OP, f, grid(n), &o, &c, &t, &e, &m)?;
    }
    wrap(out, &shape)
}

/// Runs a fused elementwise program (see [`FusedProgram`]) on CUDA tensors of one shape (or
/// one element, broadcast). Returns a contiguous tensor of that shape.
pub fn fused_elementwise(program: &FusedProgram, inputs: &[&Tensor]) -> Result<Tensor> {
    const OP: &str = "fused_elementwise";
    program.validate()?;
    if inputs.len() != program.num_inputs {
        return Err(Error::invalid(
            OP,
            format!(
                "the program takes {} inputs, {} given",
                program.num_inputs,
                inputs.len()
            ),
        ));
    }
    let dev = same_device(OP, inputs)?;
    let shape: Vec<usize> = inputs.iter().find(|t| t.numel() != 1).map_or_else(
        || inputs.first().map_or(vec![], |t| t.shape().to_vec()),
        |t| t.shape().to_vec(),
    );
    let mut mask = 0u64;
    let mut held = Vec::with_capacity(inputs.len());
    for (k, t) in inputs.iter().enumerate() {
        if t.dtype() != program.dtype {
            return Err(Error::DTypeMismatch {
                op: OP,
                expected: program.dtype.name().to_string(),
                got: t.dtype(),
            });
        }
        if t.numel() == 1 && shape.iter().product::<usize>() != 1 {
            mask |= 1 << k;
        } else if t.shape() != shape.as_slice() {
            return Err(Error::shape_mismatch(OP, &shape, t.shape()));
        }
        held.push(t.contiguous()?);
    }
    let out_dtype = program.out_dtype();
    let n: usize = shape.iter().product();
    let out = CudaStorage::alloc(&dev, OP, out_dtype, n)?;
    if n > 0 {
        let name = program.kernel_name();
        let src = program.source()?;
        let f = function(&dev, OP, &name, &name, || src)?;
        let ptrs: Vec<u64> = held
            .iter()
            .map(|t| cuda_of(t, OP).map(|s| s.ptr_at(t.layout().offset())))
            .collect::<Result<_>>()?;
        let o = out.ptr();
        let n64 = n as i64;
        dev.bind(OP)?;
        let mut b = dev.stream.launch_builder(&f);
        b.arg(&o);
        for p in &ptrs {
            b.arg(p);
        }
        b.arg(&mask).arg(&n64);
        // SAFETY: one pointer per input (each contiguous with `n` elements, or one element
        // when its bit of `mask` is set), the output holds `n` elements, and the argument
        // types match the generated kernel's parameters.
        unsafe { b.launch(grid(n)) }
            .map_err(|e| dev.err(OP, format!("kernel launch failed: {e}")))?;
    }
    wrap(out, &shape)
}

/// Source of the raw (bit-moving) kernels for an unsigned type of one element's size.
pub(crate) fn raw_source(raw: &str) -> String {
    assemble(&format!("#define RAW_T {raw}\n"), BODY)
}

/// Source of the cast kernel between two dtypes.
pub(crate) fn cast_source(from: DType, to: DType) -> String {
    let d = format!(
        "{}{}#define CAST 1\n",
        dtype_defines("A", from),
        dtype_defines("O", to)
    );
    assemble(&d, BODY)
}

/// Source of the unary kernel of `op` on `dtype`, `None` when the op is not defined for it.
pub(crate) fn unary_source(op: UnaryOp, dtype: DType) -> Option<String> {
    let expr = unary_expr(op, dtype, "x")?;
    let d = format!(
        "{}{}#define UNARY_OP(x) ({expr})\n",
        dtype_defines("A", dtype),
        dtype_defines("O", dtype)
    );
    Some(assemble(&d, BODY))
}

/// Source of the binary kernel of `op` on `dtype`, `None` when the op is not defined for it.
pub(crate) fn binary_source(op: BinaryOp, dtype: DType) -> Option<String> {
    let expr = binary_expr(op, dtype, "x", "y")?;
    let out = if op.is_comparison() {
        DType::Bool
    } else {
        dtype
    };
    let d = format!(
        "{}{}#define BINARY_OP(x, y) ({expr})\n",
        dtype_defines("A", dtype),
        dtype_defines("O", out)
    );
    Some(assemble(&d, BODY))
}
