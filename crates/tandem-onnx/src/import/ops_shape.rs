//! Shape and movement ops, constants and casts, with import-time tracking of shape vectors.

use super::node::{
    axis, check_created, const_ints, const_tensor, known_dims, one, opt, req, Arg, Args, Known,
    NodeCtx, Outs, PDim,
};
use super::ops_math::coerce_2d;
use crate::tensor_proto::{dtype_from_onnx, onnx_type_name, tensor_from_proto, MAX_RANK};
use tandem_ir::{Emit, EmitExt, Op};
use tandem_tensor::{DType, Result, Tensor};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Reshape" => reshape(ctx, f, args),
        "Flatten" => flatten(ctx, f, args),
        "Transpose" => transpose(ctx, f, args),
        "Squeeze" => squeeze(ctx, f, args),
        "Unsqueeze" => unsqueeze(ctx, f, args),
        "Concat" => concat(ctx, f, args),
        "Gather" => gather(ctx, f, args),
        "Shape" => shape(ctx, f, args),
        "Constant" => constant(ctx, f),
        "ConstantOfShape" => constant_of_shape(ctx, f, args),
        "Cast" => cast(ctx, f, args),
        "Slice" => slice(ctx, f, args),
        "Expand" => expand(ctx, f, args),
        "Size" => size(f, args, ctx),
        "Split" => split(ctx, f, args),
        _ => return None,
    })
}

/// The integer entries of a rank <= 1 value when known (fully or partly) at import time.
fn vector_of<V>(a: &Arg<V>) -> Option<Vec<PDim>> {
    match &a.known {
        Some(Known::Full(t)) if t.rank() <= 1 && !t.dtype().is_float() => Some(
            t.cast(DType::I64)
                .ok()?
                .to_vec::<i64>()
                .ok()?
                .into_iter()
                .map(PDim::Val)
                .collect(),
        ),
        Some(Known::Partial(v)) => Some(v.clone()),
        _ => None,
    }
}

/// Results of rank above [`MAX_RANK`] are refused (ranks come from the file).
fn check_rank(ctx: &NodeCtx<'_>, rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(ctx.err(format!("rank {rank} is above the limit of {MAX_RANK}")));
    }
    Ok(())
}

/// What is known about a vector result `y` whose entries are `v`: `Known::Partial` while
/// some entry is a run-time dim, the whole tensor (in `y`'s dtype and shape) once every
/// entry is known, e.g. `Shape(x)[2:]` of an `x` whose batch alone is dynamic.
fn known_of<F: Emit>(f: &F, y: &F::Value, v: Option<Vec<PDim>>) -> Option<Known> {
    let v = v?;
    if v.iter().any(|d| !matches!(d, PDim::Val(_))) {
        return Some(Known::Partial(v));
    }
    let vals: Vec<i64> = v
        .iter()
        .filter_map(|d| match d {
            PDim::Val(x) => Some(*x),
            PDim::Dim(..) | PDim::Unknown => None,
        })
        .collect();
    let shape: Vec<usize> = match (f.rank(y), f.dim(y, 0)) {
        (0, _) if vals.len() == 1 => vec![],
        (1, Some(n)) if n == vals.len() => vec![n],
        _ => return None,
    };
    let t = Tensor::from_vec(vals, &shape).ok()?.cast(f.dtype(y)).ok()?;
    Some(Known::Full(t))
}

fn reshape<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = req(ctx, args, 0)?;
    let shape = if ctx.opset < 5 {
        let v = ctx.ints("shape")?.unwrap_or_default();
        v.into_iter().map(PDim::Val).collect()
    } else {
        known_dims(ctx, req(ctx, args, 1)?, "shape")?
    };
    check_rank(ctx, shape.len())?;
    let allowzero = ctx.opset >= 14 && ctx.int("allowzero", 0)? != 0;
    let data_name = ctx.proto.input.first().cloned().unwrap_or_default();
    let xd = f.shape(&x.value);
    let mut target: Vec<PDim> = Vec::with_capacity(shape.len());
    for (i, s) in shape.into_iter().enumerate() {
        target.push(match s {
            PDim::Val(0) if !allowzero => match xd.get(i) {
                Some(Some(d)) => PDim::Val(*d as i64),
                Some(None) => PDim::Dim(data_name.clone(), i),
                None => {
                    return Err(ctx.err(format!(
                        "shape entry {i} is 0 (copy) but the input has rank {}",
                        xd.len()
                    )))
                }
            },
            PDim::Val(v) if v < -1 => return Err(ctx.err(format!("invalid shape entry {v}"))),
            other => other,
        });
    }
    let t = resolve_target(ctx, &target, &data_name, &xd)?;
    let y = f.reshape(&x.value, &t)?;
    let known = if f.rank(&y) <= 1 {
        known_of(f, &y, vector_of(x))
    } else {
        None
    };
    Ok(vec![(y, known)])
}

/// A reshape target with at most one `-1`. Run-time dims of the data input itself (the batch
/// in `x.view(x.size(0), -1)`) are divided out so that the other `-1` can be computed.
fn resolve_target(
    ctx: &NodeCtx<'_>,
    target: &[PDim],
    data_name: &str,
    xd: &[Option<usize>],
) -> Result<Vec<isize>> {
    let unknown = target
        .iter()
        .filter(|d| !matches!(d, PDim::Val(v) if *v >= 0))
        .count();
    let mut out: Vec<Option<isize>> = target
        .iter()
        .map(|d| match d {
            PDim::Val(v) if *v >= 0 => Some(*v as isize),
            _ => None,
        })
        .collect();
    if unknown > 1 {
        let infer_at: Vec<usize> = (0..target.len())
            .filter(|&i| target[i] == PDim::Val(-1))
            .collect();
        let copied: Vec<usize> = target
            .iter()
            .filter_map(|d| match d {
                PDim::Dim(of, a) if of == data_name => Some(*a),
                _ => None,
            })
            .collect();
        let only_own_dims = unknown == infer_at.len() + copied.len();
        let rest: Option<usize> = (0..xd.len())
            .filter(|a| !copied.contains(a))
            .map(|a| xd[a])
            .product();
        let known = out
            .iter()
            .flatten()
            .try_fold(1usize, |acc, &v| acc.checked_mul(v as usize))
            .ok_or_else(|| ctx.err(format!("target shape {target:?} overflows")))?;
        match (infer_at.as_slice(), rest) {
            ([i], Some(rest)) if only_own_dims && known > 0 && rest % known == 0 => {
                out[*i] = Some((rest / known) as isize);
            }
            _ => {
                return Err(ctx.err(format!(
                    "target shape {target:?} has more than one entry unknown at import time"
                )))
            }
        }
        if out.iter().filter(|d| d.is_none()).count() > 1 {
            return Err(ctx.err(format!(
                "target shape {target:?} has more than one run-time dimension"
            )));
        }
    }
    Ok(out.into_iter().map(|d| d.unwrap_or(-1)).collect())
}

fn flatten<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x) as i64;
    let a = ctx.int("axis", 1)?;
    let a = if a < 0 { a + r } else { a };
    if a < 0 || a > r {
        return Err(ctx.err(format!("axis {a} is out of range for rank {r}")));
    }
    one(coerce_2d(f, x, a as usize)?)
}

fn transpose<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let perm: Vec<isize> = match ctx.ints("perm")? {
        Some(p) => p.into_iter().map(|a| a as isize).collect(),
        None => (0..r as isize).rev().collect(),
    };
    if perm.len() != r {
        return Err(ctx.err(format!("perm {perm:?} does not match rank {r}")));
    }
    one(f.permute(x, &perm)?)
}

fn axes_of<F: Emit>(ctx: &NodeCtx<'_>, args: &Args<F::Value>) -> Result<Option<Vec<i64>>> {
    if ctx.opset >= 13 {
        opt(args, 1).map(|a| const_ints(ctx, a, "axes")).transpose()
    } else {
        ctx.ints("axes")
    }
}

fn squeeze<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = req(ctx, args, 0)?;
    let dims = f.shape(&x.value);
    let r = dims.len();
    let mut axes: Vec<usize> = match axes_of::<F>(ctx, args)? {
        Some(a) => a.iter().map(|&a| axis(ctx, a, r)).collect::<Result<_>>()?,
        None => (0..r).filter(|&i| dims[i] == Some(1)).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    let mut y = x.value.clone();
    for &a in axes.iter().rev() {
        y = f.squeeze(&y, a as isize)?;
    }
    let known = if f.rank(&y) <= 1 {
        known_of(f, &y, vector_of(x))
    } else {
        None
    };
    Ok(vec![(y, known)])
}

fn unsqueeze<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = req(ctx, args, 0)?;
    let axes = axes_of::<F>(ctx, args)?.ok_or_else(|| ctx.err("axes are required"))?;
    let out_rank = f.rank(&x.value) + axes.len();
    check_rank(ctx, out_rank)?;
    let mut axes: Vec<usize> = axes
        .iter()
        .map(|&a| axis(ctx, a, out_rank))
        .collect::<Result<_>>()?;
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(ctx.err("repeated axis"));
    }
    let mut y = x.value.clone();
    for &a in &axes {
        y = f.unsqueeze(&y, a as isize)?;
    }
    let known = if f.rank(&y) <= 1 {
        known_of(f, &y, vector_of(x))
    } else {
        None
    };
    Ok(vec![(y, known)])
}

fn concat<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let xs: Vec<&Arg<F::Value>> = args.iter().flatten().collect();
    let first = xs
        .first()
        .ok_or_else(|| ctx.err("needs at least one input"))?;
    let a = axis(ctx, ctx.int("axis", 0)?, f.rank(&first.value))?;
    let vals: Vec<&F::Value> = xs.iter().map(|a| &a.value).collect();
    let y = f.concat(&vals, a as isize)?;
    let known = if f.rank(&y) == 1 && !f.dtype(&y).is_float() {
        // Pieces computed at run time (`batch * heads`) are unknown entries, so that a
        // Reshape can still turn one of them into -1.
        xs.iter()
            .map(|a| vector_of(a).or_else(|| f.dim(&a.value, 0).map(|n| vec![PDim::Unknown; n])))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat())
    } else {
        None
    };
    let known = known_of(f, &y, known);
    Ok(vec![(y, known)])
}

fn gather<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let data = req(ctx, args, 0)?;
    let idx = req(ctx, args, 1)?;
    let r = f.rank(&data.value);
    let a = axis(ctx, ctx.int("axis", 0)?, r)?;
    let dim = f.dim(&data.value, a);
    let index = match const_tensor(idx) {
        Some(t) => {
            let mut v = t.cast(DType::I64)?.to_vec::<i64>()?;
            for i in v.iter_mut().filter(|i| **i < 0) {
                let d = dim.ok_or_else(|| {
                    ctx.err("negative indices need the gathered dimension to be known")
                })?;
                *i += d as i64;
            }
            f.constant(Tensor::from_vec(v, t.shape())?)?
        }
        None => {
            let i = f.cast(&idx.value, DType::I64)?;
            match dim {
                Some(d) => {
                    let neg = f.scalar(tandem_tensor::BinaryOp::Lt, &i, 0.0, false)?;
                    f.where_(&neg, &f.add_scalar(&i, d as f64)?, &i)?
                }
                None => i,
            }
        }
    };
    let ir = f.rank(&index);
    let y = match ir {
        1 => f.index_select(&data.value, a as isize, &index)?,
        0 => {
            let one_idx = f.reshape(&index, &[1])?;
            let s = f.index_select(&data.value, a as isize, &one_idx)?;
            f.squeeze(&s, a as isize)?
        }
        _ => {
            let flat = f.reshape(&index, &[-1])?;
            let s = f.index_select(&data.value, a as isize, &flat)?;
            let dd = f.shape(&data.value);
            let id = f.shape(&index);
            let target: Vec<Option<usize>> = dd[..a]
                .iter()
                .chain(id.iter())
                .chain(dd[a + 1..].iter())
                .copied()
                .collect();
            if target.iter().filter(|d| d.is_none()).count() > 1 {
                return Err(ctx.err("result shape has more than one unknown dimension"));
            }
            let t: Vec<isize> = target
                .iter()
                .map(|d| d.map_or(-1, |d| d as isize))
                .collect();
            f.reshape(&s, &t)?
        }
    };
    // Picking entries of a partly known shape vector.
    let known = match (vector_of(data), const_tensor(idx)) {
        (Some(v), Some(it)) if a == 0 && r == 1 && it.rank() <= 1 => {
            let ids = it.cast(DType::I64)?.to_vec::<i64>()?;
            ids.iter()
                .map(|&i| {
                    let i = if i < 0 { i + v.len() as i64 } else { i };
                    usize::try_from(i).ok().and_then(|i| v.get(i).cloned())
                })
                .collect::<Option<Vec<_>>>()
        }
        _ => None,
    };
    let known = known_of(f, &y, known);
    Ok(vec![(y, known)])
}

fn shape<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let dims = f.shape(x);
    let r = dims.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = if ctx.opset >= 15 {
        (clampi(ctx.int("start", 0)?), clampi(ctx.int("end", r)?))
    } else {
        (0, dims.len())
    };
    let src = ctx.proto.input.first().cloned().unwrap_or_default();
    let sel: Vec<PDim> = dims
        .get(s..e.max(s))
        .unwrap_or(&[])
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) => PDim::Val(*d as i64),
            None => PDim::Dim(src.clone(), s + i),
        })
        .collect();
    let all_known: Option<Vec<i64>> = sel
        .iter()
        .map(|d| match d {
            PDim::Val(v) => Some(*v),
            PDim::Dim(..) | PDim::Unknown => None,
        })
        .collect();
    if let Some(all) = all_known {
        let n = all.len();
        let t = Tensor::from_vec(all, &[n])?;
        return Ok(vec![(f.constant(t.clone())?, Some(Known::Full(t)))]);
    }
    // Some dims are known only at run time: build the vector from per-axis sizes.
    let mut parts = Vec::with_capacity(sel.len());
    for (i, d) in sel.iter().enumerate() {
        let p = match d {
            PDim::Val(v) => f.constant(Tensor::from_vec(vec![*v], &[1])?)?,
            PDim::Dim(..) | PDim::Unknown => {
                let n = f.emit(
                    Op::DimSize {
                        axes: vec![s + i],
                        dtype: DType::I64,
                    },
                    &[x],
                )?;
                f.unsqueeze(&n, 0)?
            }
        };
        parts.push(p);
    }
    let refs: Vec<&F::Value> = parts.iter().collect();
    Ok(vec![(f.concat(&refs, 0)?, Some(Known::Partial(sel)))])
}

fn constant<F: Emit>(ctx: &NodeCtx<'_>, f: &F) -> Result<Outs<F::Value>> {
    let t = if let Some(t) = ctx.tensor("value")? {
        tensor_from_proto(t)?
    } else if ctx.has("value_float") {
        Tensor::scalar(ctx.float("value_float", 0.0)?)
    } else if let Some(v) = ctx.floats("value_floats")? {
        let n = v.len();
        Tensor::from_vec(v, &[n])?
    } else if ctx.has("value_int") {
        Tensor::scalar(ctx.int("value_int", 0)?)
    } else if let Some(v) = ctx.ints("value_ints")? {
        let n = v.len();
        Tensor::from_vec(v, &[n])?
    } else {
        return Err(ctx.err(
            "needs a value, value_float(s) or value_int(s) attribute (sparse and string \
             constants are not supported)",
        ));
    };
    Ok(vec![(f.constant(t.clone())?, Some(Known::Full(t)))])
}

fn constant_of_shape<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let shape_arg = req(ctx, args, 0)?;
    let pdims = known_dims(ctx, shape_arg, "shape")?;
    check_rank(ctx, pdims.len())?;
    let (value, dtype) = match ctx.tensor("value")? {
        Some(t) => {
            let t = tensor_from_proto(t)?;
            if t.numel() != 1 {
                return Err(ctx.err("value must hold exactly one element"));
            }
            (t.item()?, t.dtype())
        }
        None => (0.0, DType::F32),
    };
    let mut dims: Vec<Option<usize>> = Vec::with_capacity(pdims.len());
    for d in &pdims {
        dims.push(match d {
            PDim::Val(v) => Some(
                usize::try_from(*v).map_err(|_| ctx.err(format!("negative dim in {pdims:?}")))?,
            ),
            PDim::Dim(..) => None,
            PDim::Unknown => {
                return Err(ctx.err(format!("shape {pdims:?} has an entry computed at run time")))
            }
        });
    }
    // Checked against a bound before allocating: the shape comes from the file.
    check_created(ctx, "result", &dims)?;
    if let Some(shape) = dims.iter().copied().collect::<Option<Vec<usize>>>() {
        return one(f.full(&shape, value, dtype)?);
    }
    // Entries known only at run time (a batch from `Shape`): zeros shaped [1, .., n, .., 1]
    // from the value that has that dim, broadcast against the static part.
    if dtype == DType::Bool {
        return Err(ctx.err("a bool result with run-time dims is not supported"));
    }
    let rank = dims.len();
    let base: Vec<usize> = dims.iter().map(|d| d.unwrap_or(1)).collect();
    let mut y = f.full(&base, value, dtype)?;
    for (k, d) in pdims.iter().enumerate() {
        let PDim::Dim(of, a) = d else { continue };
        let src = shape_arg
            .sources
            .iter()
            .find(|(n, _)| n == of)
            .map(|(_, v)| v)
            .ok_or_else(|| ctx.err(format!("shape entry {k} refers to unknown value '{of}'")))?;
        let mut col = src.clone();
        for other in (0..f.rank(src)).filter(|o| o != a) {
            col = f.narrow(&col, other as isize, 0, 1)?;
        }
        let mut target = vec![1isize; rank];
        target[k] = -1;
        let col = f.reshape(&col, &target)?;
        y = f.add(&y, &f.full_like(&col, 0.0, Some(dtype))?)?;
    }
    one(y)
}

fn cast<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = req(ctx, args, 0)?;
    let code = ctx.int("to", 0)? as i32;
    let d = dtype_from_onnx(code)
        .ok_or_else(|| ctx.err(format!("cannot cast to {}", onnx_type_name(code))))?;
    let y = f.cast(&x.value, d)?;
    let known = if !d.is_float() {
        known_of(f, &y, vector_of(x))
    } else {
        None
    };
    Ok(vec![(y, known)])
}

fn slice<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = req(ctx, args, 0)?;
    let (starts, ends, axes, steps) = if ctx.opset < 10 {
        let s = ctx
            .ints("starts")?
            .ok_or_else(|| ctx.err("starts are required"))?;
        let e = ctx
            .ints("ends")?
            .ok_or_else(|| ctx.err("ends are required"))?;
        (s, e, ctx.ints("axes")?, None)
    } else {
        let s = const_ints(ctx, req(ctx, args, 1)?, "starts")?;
        let e = const_ints(ctx, req(ctx, args, 2)?, "ends")?;
        let a = opt(args, 3)
            .map(|a| const_ints(ctx, a, "axes"))
            .transpose()?;
        let st = opt(args, 4)
            .map(|a| const_ints(ctx, a, "steps"))
            .transpose()?;
        (s, e, a, st)
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(ctx.err("starts, ends, axes and steps must have the same length"));
    }
    let r = f.rank(&x.value);
    let mut y = x.value.clone();
    let mut known = vector_of(x).filter(|_| r == 1);
    for i in 0..n {
        let a = axis(ctx, axes[i], r)?;
        if steps[i] == 0 {
            return Err(ctx.err("step 0 is invalid"));
        }
        if steps[i] < 0 {
            // Reversed slices (torch.flip) pick their indices at import time.
            let d = f
                .dim(&y, a)
                .ok_or_else(|| ctx.err("a negative step needs the sliced dimension to be known"))?;
            let ids = reversed_indices(d, starts[i], ends[i], steps[i]);
            known = known.map(|v| {
                ids.iter()
                    .filter_map(|&k| v.get(k as usize).cloned())
                    .collect()
            });
            let n = ids.len();
            let idx = f.constant(Tensor::from_vec(ids, &[n])?)?;
            y = f.index_select(&y, a as isize, &idx)?;
            continue;
        }
        let (s, e, st) = (
            starts[i].clamp(isize::MIN as i64, isize::MAX as i64) as isize,
            ends[i].clamp(isize::MIN as i64, isize::MAX as i64) as isize,
            steps[i] as usize,
        );
        y = f.slice(&y, a as isize, s, e, st)?;
        known = match known {
            Some(v) => {
                let (s0, len) = tandem_tensor::slice_range(v.len(), s, e, st)?;
                Some(
                    (0..len)
                        .filter_map(|k| v.get(s0 + k * st).cloned())
                        .collect(),
                )
            }
            None => None,
        };
    }
    let known = known_of(f, &y, known);
    Ok(vec![(y, known)])
}

/// A run-time entry of Expand's shape.
const RUNTIME: i64 = -2;

/// The indices picked by an ONNX slice with a negative `step` along a dim of size `d`.
fn reversed_indices(d: usize, start: i64, end: i64, step: i64) -> Vec<i64> {
    if d == 0 {
        return Vec::new();
    }
    let d = d as i64;
    let start = if start < 0 {
        start.saturating_add(d)
    } else {
        start
    }
    .clamp(0, d - 1);
    let end = if end < 0 { end.saturating_add(d) } else { end }.clamp(-1, d - 1);
    let mut out = Vec::new();
    let mut k = start;
    while k > end && d > 0 {
        out.push(k);
        k = k.saturating_add(step);
    }
    out
}

fn expand<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    // Entries known only at run time (a `Shape` of a value with a dynamic batch) are `-2`:
    // the input's own dim at that position is kept.
    let shape: Vec<i64> = known_dims(ctx, req(ctx, args, 1)?, "shape")?
        .into_iter()
        .map(|d| match d {
            PDim::Val(v) => v,
            PDim::Dim(..) | PDim::Unknown => RUNTIME,
        })
        .collect();
    let xd = f.shape(x);
    let out_rank = xd.len().max(shape.len());
    check_rank(ctx, out_rank)?;
    let mut out: Vec<Option<usize>> = vec![None; out_rank];
    for (i, o) in out.iter_mut().enumerate() {
        let xi = (i + xd.len()).checked_sub(out_rank).map(|j| xd[j]);
        let si = (i + shape.len()).checked_sub(out_rank).map(|j| shape[j]);
        *o = match (xi, si) {
            (Some(Some(d)), Some(1)) | (Some(Some(d)), None) => Some(d),
            // A run-time dim (the batch) broadcast against 1 stays as it is.
            (Some(None), Some(1)) | (Some(None), None) | (Some(None), Some(RUNTIME)) => None,
            (Some(Some(d)), Some(RUNTIME)) if d != 1 => Some(d),
            (_, Some(s)) if s >= 0 => Some(s as usize),
            _ => {
                return Err(ctx.err(format!(
                    "cannot expand input of shape {} to {shape:?}",
                    tandem_ir::infer::fmt_shape(&xd)
                )))
            }
        };
    }
    check_created(ctx, "result", &out)?;
    if let Some(known) = out.iter().copied().collect::<Option<Vec<usize>>>() {
        return one(f.expand(x, &known)?);
    }
    // Some dims are only known at run time: a no-op when nothing grows (PyTorch's `repeat`
    // exports Expand to ones), else broadcasting against zeros of the static part.
    let lead = out_rank - xd.len();
    if out[lead..] == xd[..] {
        let mut y = x.clone();
        for _ in 0..lead {
            y = f.unsqueeze(&y, 0)?;
        }
        return one(y);
    }
    let dtype = f.dtype(x);
    if dtype == DType::Bool {
        return Err(ctx.err(format!(
            "cannot expand a bool input of shape {} with run-time dims",
            tandem_ir::infer::fmt_shape(&xd)
        )));
    }
    let base: Vec<usize> = out.iter().map(|d| d.unwrap_or(1)).collect();
    one(f.add(x, &f.full(&base, 0.0, dtype)?)?)
}

fn size<F: Emit>(f: &F, args: &Args<F::Value>, ctx: &NodeCtx<'_>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let axes: Vec<usize> = (0..f.rank(x)).collect();
    let n = f.dim_size(x, &axes, DType::I64)?;
    let known: Option<usize> = axes.iter().map(|&a| f.dim(x, a)).product();
    let known = known.map(|n| Known::Full(Tensor::scalar(n as i64)));
    Ok(vec![(n, known)])
}

fn split<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let a = axis(ctx, ctx.int("axis", 0)?, f.rank(x))?;
    let n_out = ctx.proto.output.len().max(1);
    let sizes: Vec<i64> = if ctx.opset >= 13 {
        match opt(args, 1) {
            Some(s) => const_ints(ctx, s, "split")?,
            None => Vec::new(),
        }
    } else {
        ctx.ints("split")?.unwrap_or_default()
    };
    let sizes: Vec<usize> = if sizes.is_empty() {
        let d = f
            .dim(x, a)
            .ok_or_else(|| ctx.err("an even split needs the split axis to be known"))?;
        let chunk = d.div_ceil(n_out);
        (0..n_out)
            .map(|i| chunk.min(d.saturating_sub(i * chunk)))
            .collect()
    } else {
        sizes
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| ctx.err(format!("negative split {v}"))))
            .collect::<Result<_>>()?
    };
    if sizes.len() != n_out {
        return Err(ctx.err(format!("{} split sizes for {n_out} outputs", sizes.len())));
    }
    let mut start = 0usize;
    let mut outs = Vec::with_capacity(n_out);
    for len in sizes {
        outs.push((f.narrow(x, a as isize, start, len)?, None));
        start += len;
    }
    Ok(outs)
}
