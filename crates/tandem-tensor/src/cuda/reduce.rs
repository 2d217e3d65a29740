//! CUDA reductions (sum/mean/max/min/prod over axes, argmax/argmin), softmax, log-softmax
//! and fused cross-entropy. The reduced axes are moved last and made contiguous, then one
//! block reduces each row.

use super::compile::{assemble, function, per_row};
use super::elementwise::{launch, same_device, wrap};
use super::source::dtype_defines;
use super::storage::{cuda_of, CudaStorage};
use crate::{ArgReduceOp, DType, Error, ReduceOp, Result, Tensor};
use cudarc::driver::PushKernelArg;

const BODY: &str = include_str!("kernels/reduce.cu");
const THREADS: u32 = 256;

/// `#define`s of the float helpers (infinity, exp, log) in `dtype`'s compute type.
fn float_helpers(dtype: DType) -> &'static str {
    if dtype == DType::F64 {
        "#define TDM_INF __longlong_as_double(0x7ff0000000000000LL)\n#define TDM_EXP(x) exp(x)\n#define TDM_LOG(x) log(x)\n"
    } else {
        "#define TDM_INF __int_as_float(0x7f800000)\n#define TDM_EXP(x) expf(x)\n#define TDM_LOG(x) logf(x)\n"
    }
}

/// The tensor with the `reduced` axes moved last, contiguous; returns it with (rows, k).
fn rows_last(t: &Tensor, reduced: &[bool]) -> Result<(Tensor, usize, usize)> {
    let rank = t.rank();
    let mut perm: Vec<isize> = (0..rank)
        .filter(|&d| !reduced[d])
        .map(|d| d as isize)
        .collect();
    perm.extend((0..rank).filter(|&d| reduced[d]).map(|d| d as isize));
    let k: usize = (0..rank)
        .filter(|&d| reduced[d])
        .map(|d| t.shape()[d])
        .product();
    let rows: usize = (0..rank)
        .filter(|&d| !reduced[d])
        .map(|d| t.shape()[d])
        .product();
    let moved = if rank == 0 {
        t.clone()
    } else {
        t.permute(&perm)?
    };
    Ok((moved.contiguous()?, rows, k))
}

/// Reduces a CUDA tensor over the axes flagged in `reduced` (validated by the caller),
/// returning the values in the kept axes' row-major order (the caller reshapes).
pub(crate) fn reduce(
    t: &Tensor,
    op: ReduceOp,
    reduced: &[bool],
    out_shape: &[usize],
) -> Result<Tensor> {
    let name = op.name();
    let dev = same_device(name, &[t])?;
    let dtype = t.dtype();
    let out_dtype = match op {
        ReduceOp::Sum | ReduceOp::Prod if !dtype.is_float() => DType::I64,
        _ => dtype,
    };
    let (c, rows, k) = rows_last(t, reduced)?;
    let out = CudaStorage::alloc(&dev, name, out_dtype, rows)?;
    if rows > 0 {
        let key = format!("reduce:{name}:{dtype}");
        let f = function(&dev, name, &key, "tdm_reduce", || reduce_source(op, dtype))?;
        let src = cuda_of(&c, name)?;
        let (o, a) = (out.ptr(), src.ptr_at(c.layout().offset()));
        let (r, kk) = (rows as i64, k as i64);
        launch!(dev, name, f, per_row(rows, THREADS), &o, &a, &r, &kk)?;
    }
    wrap(out, out_shape)
}

/// Index of the max/min along `axis` (validated by the caller, not empty).
pub(crate) fn arg_reduce(
    t: &Tensor,
    op: ArgReduceOp,
    axis: usize,
    out_shape: &[usize],
) -> Result<Tensor> {
    let name = op.name();
    let dev = same_device(name, &[t])?;
    let dtype = t.dtype();
    let mut reduced = vec![false; t.rank()];
    reduced[axis] = true;
    let (c, rows, k) = rows_last(t, &reduced)?;
    let out = CudaStorage::alloc(&dev, name, DType::I64, rows)?;
    if rows > 0 {
        let key = format!("argreduce:{name}:{dtype}");
        let f = function(&dev, name, &key, "tdm_argreduce", || {
            argreduce_source(op, dtype)
        })?;
        let src = cuda_of(&c, name)?;
        let (o, a) = (out.ptr(), src.ptr_at(c.layout().offset()));
        let (r, kk) = (rows as i64, k as i64);
        launch!(dev, name, f, per_row(rows, THREADS), &o, &a, &r, &kk)?;
    }
    wrap(out, out_shape)
}

fn float_only(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            device: t.device(),
        });
    }
    Ok(())
}

/// Softmax or log-softmax along `axis` (validated by the caller).
pub(crate) fn softmax(t: &Tensor, axis: usize, log: bool) -> Result<Tensor> {
    let name = if log { "log_softmax" } else { "softmax" };
    let dev = same_device(name, &[t])?;
    float_only(name, t)?;
    let dtype = t.dtype();
    let rank = t.rank();
    let mut reduced = vec![false; rank];
    if rank > 0 {
        reduced[axis] = true;
    }
    let (c, rows, k) = rows_last(t, &reduced)?;
    let out = CudaStorage::alloc(&dev, name, dtype, c.numel())?;
    if rows > 0 && k > 0 {
        let key = format!("softmax:{dtype}");
        let f = function(&dev, name, &key, "tdm_softmax", || {
            row_source(dtype, "SOFTMAX")
        })?;
        let src = cuda_of(&c, name)?;
        let (o, a) = (out.ptr(), src.ptr_at(c.layout().offset()));
        let (r, kk, lg) = (rows as i64, k as i64, log as i32);
        launch!(dev, name, f, per_row(rows, THREADS), &o, &a, &r, &kk, &lg)?;
    }
    let moved = wrap(out, c.shape())?;
    if rank == 0 || axis + 1 == rank {
        return Ok(moved);
    }
    // Move the axis back from the end.
    let mut inv: Vec<isize> = Vec::with_capacity(rank);
    for d in 0..rank {
        inv.push(match d {
            d if d < axis => d as isize,
            d if d == axis => (rank - 1) as isize,
            d => (d - 1) as isize,
        });
    }
    moved.permute(&inv)?.contiguous()
}

/// Per-sample cross-entropy of logits `[N, C, spatial...]` (or `[C]`) with int64 targets
/// already checked for shape; `out_shape` is the target's shape.
pub(crate) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    classes: usize,
    spatial: usize,
    ignore_index: i64,
    eps: f64,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    let dev = same_device(OP, &[logits, target])?;
    float_only(OP, logits)?;
    let dtype = logits.dtype();
    let target = target.cast(DType::I64)?.contiguous()?;
    // Bad class indices are reported like on the CPU (one small device-to-host copy).
    let host = target.to_vec::<i64>()?;
    if let Some(&bad) = host
        .iter()
        .find(|&&t| t != ignore_index && (t < 0 || t as u64 >= classes as u64))
    {
        return Err(Error::IndexOutOfRange {
            op: OP,
            index: bad,
            size: classes,
        });
    }
    let samples = target.numel();
    let x = logits.contiguous()?;
    let out = CudaStorage::alloc(&dev, OP, dtype, samples)?;
    if samples > 0 && classes > 0 {
        let key = format!("xent:{dtype}");
        let f = function(&dev, OP, &key, "tdm_cross_entropy", || {
            row_source(dtype, "XENT")
        })?;
        let (o, a, tp) = (
            out.ptr(),
            cuda_of(&x, OP)?.ptr_at(x.layout().offset()),
            cuda_of(&target, OP)?.ptr_at(target.layout().offset()),
        );
        let (s, cl, sp) = (samples as i64, classes as i64, spatial.max(1) as i64);
        launch!(
            dev,
            OP,
            f,
            per_row(samples, THREADS),
            &o,
            &a,
            &tp,
            &s,
            &cl,
            &sp,
            &ignore_index,
            &eps
        )?;
    } else if samples > 0 {
        return super::elementwise::full(&dev, target.shape(), 0.0, dtype);
    }
    wrap(out, target.shape())
}

/// Source of the row reduction `op` on `dtype`.
pub(crate) fn reduce_source(op: ReduceOp, dtype: DType) -> String {
    let out_dtype = match op {
        ReduceOp::Sum | ReduceOp::Prod if !dtype.is_float() => DType::I64,
        _ => dtype,
    };
    let acc = match dtype {
        DType::F64 => "double",
        d if d.is_float() => "float",
        _ => "long long",
    };
    let (init, combine, fin) = match op {
        ReduceOp::Sum => ("((ACC_T)0)", "((a) + (b))", "(acc)"),
        ReduceOp::Mean => ("((ACC_T)0)", "((a) + (b))", "((acc) / (ACC_T)(k))"),
        ReduceOp::Prod => ("((ACC_T)1)", "((a) * (b))", "(acc)"),
        ReduceOp::Max => (
            if dtype.is_float() {
                "(-TDM_INF)"
            } else {
                "(-9223372036854775807LL - 1)"
            },
            "(((a) != (a) || (b) != (b)) ? ((a) + (b)) : ((a) > (b) ? (a) : (b)))",
            "(acc)",
        ),
        ReduceOp::Min => (
            if dtype.is_float() {
                "(TDM_INF)"
            } else {
                "(9223372036854775807LL)"
            },
            "(((a) != (a) || (b) != (b)) ? ((a) + (b)) : ((a) < (b) ? (a) : (b)))",
            "(acc)",
        ),
    };
    let d = format!(
        "{}{}{}#define REDUCE 1\n#define ACC_T {acc}\n#define RED_INIT {init}\n#define RED_COMBINE(a, b) {combine}\n#define RED_FINAL(acc, k) {fin}\n",
        dtype_defines("A", dtype),
        dtype_defines("O", out_dtype),
        float_helpers(dtype),
    );
    assemble(&d, BODY)
}

/// Source of argmax/argmin on `dtype`.
pub(crate) fn argreduce_source(op: ArgReduceOp, dtype: DType) -> String {
    let better = match op {
        ArgReduceOp::ArgMax => "((a) > (b))",
        ArgReduceOp::ArgMin => "((a) < (b))",
    };
    let d = format!(
        "{}#define ARGREDUCE 1\n#define ARG_BETTER(a, b) {better}\n",
        dtype_defines("A", dtype)
    );
    assemble(&d, BODY)
}

/// Source of the softmax (`family` = `SOFTMAX`) or cross-entropy (`XENT`) kernels on a float
/// dtype.
pub(crate) fn row_source(dtype: DType, family: &str) -> String {
    let d = format!(
        "{}{}#define {family} 1\n",
        dtype_defines("A", dtype),
        float_helpers(dtype)
    );
    assemble(&d, BODY)
}
