//! Indexing on CUDA: gather / index-select (one kernel: a 1-D index is a broadcast gather),
//! scatter-add / index-add (atomic adds), and concatenation through strided copies. Index
//! values are range-checked by the caller (`ops/index.rs`) before these run.

use super::compile::{assemble, function, grid};
use super::elementwise::{launch, same_device, wrap};
use super::meta::{coalesce, Strided};
use super::source::{dtype_defines, raw_type};
use super::storage::{cuda_of, CudaStorage};
use crate::layout::{Shape, Strides};
use crate::{DType, Error, Layout, Result, Tensor};
use cudarc::driver::PushKernelArg;

const BODY: &str = include_str!("kernels/index.cu");

fn index_type(op: &'static str, index: &Tensor) -> Result<&'static str> {
    match index.dtype() {
        DType::I64 => Ok("long long"),
        DType::I32 => Ok("int"),
        got => Err(Error::DTypeMismatch {
            op,
            expected: "an index dtype (int64 or int32)".into(),
            got,
        }),
    }
}

/// `data`'s layout over `shape` with the stride of `axis` zeroed (the index supplies it).
fn data_layout(data: &Layout, shape: &[usize], axis: usize) -> Layout {
    let mut strides = Strides::from_slice(data.strides());
    strides[axis] = 0;
    Layout::from_parts(Shape::from_slice(shape), strides, data.offset())
}

/// A 1-D index viewed as `shape`, varying only along `axis`.
pub(crate) fn broadcast_index(index: &Tensor, shape: &[usize], axis: usize) -> Layout {
    let mut strides: Strides = smallvec::smallvec![0; shape.len()];
    strides[axis] = index.strides().first().copied().unwrap_or(0);
    Layout::from_parts(Shape::from_slice(shape), strides, index.layout().offset())
}

fn meta(op: &'static str, shape: &[usize], layouts: &[&Layout]) -> Result<Strided> {
    let ops: Vec<(&[usize], usize)> = layouts.iter().map(|l| (l.strides(), l.offset())).collect();
    coalesce(op, shape, &ops)
}

/// `out[i] = data[.., index[i], ..]` over `out_shape`, with the index read through
/// `index_layout` (the index tensor's own layout for gather, a broadcast 1-D one for
/// index_select).
pub(crate) fn gather(
    op: &'static str,
    data: &Tensor,
    axis: usize,
    index: &Tensor,
    index_layout: &Layout,
    out_shape: &[usize],
) -> Result<Tensor> {
    let dev = same_device(op, &[data, index])?;
    let it = index_type(op, index)?;
    let n: usize = out_shape.iter().product();
    let out = CudaStorage::alloc(&dev, op, data.dtype(), n)?;
    if n > 0 {
        let dl = data_layout(data.layout(), out_shape, axis);
        let m = meta(op, out_shape, &[&dl, index_layout])?;
        let raw = raw_type(data.dtype());
        let f = function(
            &dev,
            op,
            &format!("gather:{raw}:{it}"),
            "tdm_gather",
            || gather_source(raw, it),
        )?;
        let (o, s, i) = (
            out.ptr(),
            cuda_of(data, op)?.ptr(),
            cuda_of(index, op)?.ptr(),
        );
        let axis_stride = data.strides()[axis] as i64;
        launch!(dev, op, f, grid(n), &o, &s, &i, &m, &axis_stride)?;
    }
    wrap(out, out_shape)
}

/// A copy of `base` with `src` (read through `src_layout` over `iter_shape`) added at
/// `base[.., index[i], ..]`, the index read through `index_layout` over `iter_shape`.
pub(crate) fn scatter_add(
    op: &'static str,
    base: &Tensor,
    axis: usize,
    index: &Tensor,
    index_layout: &Layout,
    src: &Tensor,
    src_layout: &Layout,
    iter_shape: &[usize],
) -> Result<Tensor> {
    let dev = same_device(op, &[base, index, src])?;
    let it = index_type(op, index)?;
    let dtype = base.dtype();
    if atomic_add(dtype).is_none() {
        return Err(Error::UnsupportedDType {
            op,
            dtype,
            device: base.device(),
        });
    }
    let out = base.copy()?;
    let n: usize = iter_shape.iter().product();
    if n > 0 {
        let ol = data_layout(out.layout(), iter_shape, axis);
        let m = meta(op, iter_shape, &[&ol, index_layout, src_layout])?;
        let key = format!("scatter_add:{dtype}:{it}");
        let f = function(&dev, op, &key, "tdm_scatter_add", || {
            scatter_source(dtype, it).unwrap_or_default()
        })?;
        let (o, i, s) = (
            cuda_of(&out, op)?.ptr(),
            cuda_of(index, op)?.ptr(),
            cuda_of(src, op)?.ptr(),
        );
        let axis_stride = out.strides()[axis] as i64;
        launch!(dev, op, f, grid(n), &o, &i, &s, &m, &axis_stride)?;
    }
    Ok(out)
}

/// Concatenation along `axis` into a tensor of `shape` (inputs checked by the caller).
pub(crate) fn cat(
    op: &'static str,
    tensors: &[&Tensor],
    axis: usize,
    shape: &[usize],
) -> Result<Tensor> {
    let dev = same_device(op, tensors)?;
    let dtype = tensors.first().map_or(DType::F32, |t| t.dtype());
    let n: usize = shape.iter().product();
    let out = CudaStorage::alloc(&dev, op, dtype, n)?;
    let raw = raw_type(dtype);
    let f = function(
        &dev,
        op,
        &format!("copy_into:{raw}"),
        "tdm_copy_into",
        || copy_into_source(raw),
    )?;
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        if t.dtype() != dtype {
            return Err(Error::DTypeMismatch {
                op,
                expected: dtype.name().to_string(),
                got: t.dtype(),
            });
        }
        let len = t.shape()[axis];
        let k = t.numel();
        if k > 0 {
            let dst = full.slice(axis, start, len, 1)?;
            let m = meta(op, t.shape(), &[&dst, t.layout()])?;
            let (o, a) = (out.ptr(), cuda_of(t, op)?.ptr());
            launch!(dev, op, f, grid(k), &o, &a, &m)?;
        }
        start += len;
    }
    wrap(out, shape)
}

/// Source of the gather kernel for an element size (`raw`) and index type (`it`).
pub(crate) fn gather_source(raw: &str, it: &str) -> String {
    assemble(
        &format!("#define GATHER 1\n#define RAW_T {raw}\n#define I_T {it}\n"),
        BODY,
    )
}

/// The atomic add of a dtype, `None` when CUDA has none for it here.
pub(crate) fn atomic_add(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 | DType::F64 | DType::I32 => Some("atomicAdd((p), (v))"),
        DType::I64 => Some("atomicAdd((unsigned long long*)(p), (unsigned long long)(v))"),
        _ => None,
    }
}

/// Source of the scatter-add kernel, `None` for dtypes without an atomic add.
pub(crate) fn scatter_source(dtype: DType, it: &str) -> Option<String> {
    let atomic = atomic_add(dtype)?;
    let d = format!(
        "{}#define SCATTER_ADD 1\n#define I_T {it}\n#define TDM_ATOMIC_ADD(p, v) {atomic}\n",
        dtype_defines("A", dtype)
    );
    Some(assemble(&d, BODY))
}

/// Source of the strided copy-into kernel (concatenation).
pub(crate) fn copy_into_source(raw: &str) -> String {
    assemble(&format!("#define RAW_T {raw}\n"), BODY)
}

/// A tensor of `shape` filled with `value`, with `src` written at the positions of `region`
/// (a view of the contiguous `shape` with `src`'s shape): `pad` and `slice_backward`.
pub(crate) fn write_region(
    op: &'static str,
    src: &Tensor,
    shape: &[usize],
    value: f64,
    region: &Layout,
) -> Result<Tensor> {
    let dev = same_device(op, &[src])?;
    let out = super::elementwise::full(&dev, shape, value, src.dtype())?;
    let k = src.numel();
    if k > 0 {
        let raw = raw_type(src.dtype());
        let f = function(
            &dev,
            op,
            &format!("copy_into:{raw}"),
            "tdm_copy_into",
            || copy_into_source(raw),
        )?;
        let m = meta(op, src.shape(), &[region, src.layout()])?;
        let (o, a) = (cuda_of(&out, op)?.ptr(), cuda_of(src, op)?.ptr());
        launch!(dev, op, f, grid(k), &o, &a, &m)?;
    }
    Ok(out)
}
