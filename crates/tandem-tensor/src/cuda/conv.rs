//! 2-D convolution on CUDA: im2col (a gather kernel) + cuBLAS batched products, and its two
//! gradients (col2im for the input, a batched product summed over the batch for the
//! weight). Float dtypes; geometry is checked by `ops/conv.rs`.

use super::compile::{assemble, function, grid};
use super::elementwise::{launch, same_device, wrap};
use super::source::{dtype_defines, raw_type};
use super::storage::{cuda_of, CudaStorage};
use crate::cpu::conv::ConvGeom;
use crate::{DType, Error, ReduceOp, Result, Tensor};
use cudarc::driver::PushKernelArg;

const BODY: &str = include_str!("kernels/conv.cu");

/// Geometry passed by value, laid out like `struct ConvArgs` in `kernels/conv.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConvArgs {
    n: i64,
    c: i64,
    h: i64,
    w: i64,
    groups: i64,
    kh: i64,
    kw: i64,
    oh: i64,
    ow: i64,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    dh: i64,
    dw: i64,
}

// SAFETY: `repr(C)`, 64-bit integers only, matching `struct ConvArgs` field for field.
unsafe impl cudarc::driver::DeviceRepr for ConvArgs {}

fn args(g: &ConvGeom) -> ConvArgs {
    let p = &g.params;
    ConvArgs {
        n: g.n as i64,
        c: g.c as i64,
        h: g.h as i64,
        w: g.w as i64,
        groups: p.groups as i64,
        kh: g.kh as i64,
        kw: g.kw as i64,
        oh: g.oh as i64,
        ow: g.ow as i64,
        sh: p.stride[0] as i64,
        sw: p.stride[1] as i64,
        ph: p.padding[0] as i64,
        pw: p.padding[1] as i64,
        dh: p.dilation[0] as i64,
        dw: p.dilation[1] as i64,
    }
}

fn float_dtype(op: &'static str, ts: &[&Tensor]) -> Result<DType> {
    let dtype = ts.first().map_or(DType::F32, |t| t.dtype());
    if let Some(t) = ts.iter().find(|t| t.dtype() != dtype || !dtype.is_float()) {
        return Err(Error::DTypeMismatch {
            op,
            expected: "one float dtype for every operand".into(),
            got: t.dtype(),
        });
    }
    Ok(dtype)
}

/// The column buffer `[N, G, Cg*kh*kw, oh*ow]` of a contiguous input.
fn im2col(op: &'static str, x: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let dev = same_device(op, &[x])?;
    let x = x.contiguous()?;
    let groups = g.params.groups;
    let k = g.c / groups * g.kh * g.kw;
    let l = g.oh * g.ow;
    let shape = [g.n, groups, k, l];
    let total: usize = shape.iter().product();
    let out = CudaStorage::alloc(&dev, op, x.dtype(), total)?;
    if total > 0 {
        let raw = raw_type(x.dtype());
        let f = function(&dev, op, &format!("im2col:{raw}"), "tdm_im2col", || {
            im2col_source(raw)
        })?;
        let a = args(g);
        let (o, xp) = (out.ptr(), cuda_of(&x, op)?.ptr_at(x.layout().offset()));
        launch!(dev, op, f, grid(total), &o, &xp, &a)?;
    }
    wrap(out, &shape)
}

/// The weight `[O, Cg, kh, kw]` as `[G, Og, K]`.
fn weight_groups(w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let groups = g.params.groups;
    let k = g.c / groups * g.kh * g.kw;
    w.reshape_to(&[groups, g.o / groups, k])
}

/// Runs `f(group)` for every group and joins the `[N, Og, X]` results along axis 1.
fn per_group(groups: usize, f: impl Fn(usize) -> Result<Tensor>) -> Result<Tensor> {
    if groups == 1 {
        return f(0);
    }
    let parts: Vec<Tensor> = (0..groups).map(f).collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 1)
}

/// `conv2d` forward.
pub(crate) fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    g: &ConvGeom,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let mut all = vec![x, w];
    all.extend(bias);
    same_device(OP, &all)?;
    float_dtype(OP, &all)?;
    let col = im2col(OP, x, g)?;
    let wg = weight_groups(w, g)?;
    let y = per_group(g.params.groups, |gi| {
        let wi = wg.select(0, gi as isize)?; // [Og, K]
        let ci = col.select(1, gi as isize)?; // [N, K, L]
        wi.matmul(&ci) // [N, Og, L]
    })?;
    let y = y.reshape_to(&g.output_shape())?;
    match bias {
        Some(b) => y.add(&b.reshape_to(&[1, g.o, 1, 1])?),
        None => Ok(y),
    }
}

/// Gradient of `conv2d` with respect to its input.
pub(crate) fn input_grad(
    grad_out: &Tensor,
    w: &Tensor,
    g: &ConvGeom,
    input_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "conv2d_input_grad";
    let dev = same_device(OP, &[grad_out, w])?;
    let dtype = float_dtype(OP, &[grad_out, w])?;
    let groups = g.params.groups;
    let og = g.o / groups;
    let l = g.oh * g.ow;
    let go = grad_out.reshape_to(&[g.n, groups, og, l])?;
    let wg = weight_groups(w, g)?;
    // [N, G*K, L] column gradient, group by group.
    let col = per_group(groups, |gi| {
        let wt = wg.select(0, gi as isize)?.t()?; // [K, Og]
        wt.matmul(&go.select(1, gi as isize)?) // [N, K, L]
    })?
    .contiguous()?;
    let total: usize = input_shape.iter().product();
    let out = CudaStorage::alloc(&dev, OP, dtype, total)?;
    if total > 0 {
        let f = function(&dev, OP, &format!("col2im:{dtype}"), "tdm_col2im", || {
            col2im_source(dtype)
        })?;
        let a = args(g);
        let (o, cp) = (out.ptr(), cuda_of(&col, OP)?.ptr_at(col.layout().offset()));
        launch!(dev, OP, f, grid(total), &o, &cp, &a)?;
    }
    wrap(out, input_shape)
}

/// Gradient of `conv2d` with respect to its weight.
pub(crate) fn weight_grad(
    x: &Tensor,
    grad_out: &Tensor,
    g: &ConvGeom,
    weight_shape: &[usize],
) -> Result<Tensor> {
    const OP: &str = "conv2d_weight_grad";
    same_device(OP, &[x, grad_out])?;
    float_dtype(OP, &[x, grad_out])?;
    let groups = g.params.groups;
    let og = g.o / groups;
    let l = g.oh * g.ow;
    let col = im2col(OP, x, g)?; // [N, G, K, L]
    let go = grad_out.reshape_to(&[g.n, groups, og, l])?;
    let dw = per_group(groups, |gi| {
        let gi = gi as isize;
        let per_sample = go.select(1, gi)?.matmul(&col.select(1, gi)?.t()?)?; // [N, Og, K]
        per_sample.reduce(ReduceOp::Sum, &[0], true) // [1, Og, K]
    })?;
    dw.reshape_to(weight_shape)
}

/// Source of the im2col kernel for an element size.
pub(crate) fn im2col_source(raw: &str) -> String {
    assemble(&format!("#define RAW_T {raw}\n"), BODY)
}

/// Source of the col2im kernel on a float dtype.
pub(crate) fn col2im_source(dtype: DType) -> String {
    assemble(
        &format!("{}#define COL2IM 1\n", dtype_defines("A", dtype)),
        BODY,
    )
}
