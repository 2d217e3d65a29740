//! Less common ops of PyTorch and Keras exports, each a short composition of IR ops:
//! `Tile`, `Range`, `CumSum`, the norm-like reductions (`ReduceL1`, `ReduceL2`,
//! `ReduceSumSquare`, `ReduceLogSumExp`), the activations `Selu`, `Softsign`, `Mish`, `Celu`,
//! `ThresholdedRelu`, `Mod`, `OneHot`, `GatherElements`, `Trilu`, `GroupNormalization`,
//! `IsNaN`, `IsInf`, `Xor` and `TopK`.

use super::node::{
    axis, check_created, const_tensor, req, Arg, Args, Known, NodeCtx, Outs, MAX_CREATED_ELEMENTS,
};
use super::ops_math::reduce_spec;
use tandem_ir::{Emit, EmitExt, Functional};
use tandem_tensor::{ArgReduceOp, BinaryOp, DType, Result, Tensor, UnaryOp};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Tile" => tile(ctx, f, args),
        "Range" => range(ctx, f, args),
        "CumSum" => cumsum(ctx, f, args),
        "ReduceL1" => norm_reduce(ctx, f, args, Norm::L1),
        "ReduceL2" => norm_reduce(ctx, f, args, Norm::L2),
        "ReduceSumSquare" => norm_reduce(ctx, f, args, Norm::SumSquare),
        "ReduceLogSumExp" => norm_reduce(ctx, f, args, Norm::LogSumExp),
        "Selu" => selu(ctx, f, args),
        "Softsign" => (|| {
            let x = &req(ctx, args, 0)?.value;
            let d = f.add_scalar(&f.abs(x)?, 1.0)?;
            plain(f.div(x, &d)?)
        })(),
        "Mish" => (|| {
            let x = &req(ctx, args, 0)?.value;
            let sp = f.softplus(x, 1.0, f64::INFINITY)?;
            plain(f.mul(x, &f.tanh(&sp)?)?)
        })(),
        "Celu" => celu(ctx, f, args),
        "ThresholdedRelu" => (|| {
            let alpha = ctx.float("alpha", 1.0)? as f64;
            let x = &req(ctx, args, 0)?.value;
            let keep = f.gt_scalar(x, alpha)?;
            plain(f.where_(&keep, x, &f.zeros_like(x)?)?)
        })(),
        "Mod" => modulo(ctx, f, args),
        "OneHot" => one_hot(ctx, f, args),
        "GatherElements" => gather_elements(ctx, f, args),
        "Trilu" => trilu(ctx, f, args),
        "GroupNormalization" => group_norm(ctx, f, args),
        "IsNaN" => (|| {
            let x = &req(ctx, args, 0)?.value;
            plain(f.binary(BinaryOp::Ne, x, x)?)
        })(),
        "IsInf" => is_inf(ctx, f, args),
        "TopK" => top_k(ctx, f, args),
        "Xor" => (|| {
            plain(f.binary(
                BinaryOp::Ne,
                &req(ctx, args, 0)?.value,
                &req(ctx, args, 1)?.value,
            )?)
        })(),
        _ => return None,
    })
}

fn plain<V>(v: V) -> Result<Outs<V>> {
    Ok(vec![(v, None)])
}

/// A scalar input that must be known at import time, as f64.
fn const_scalar<V>(ctx: &NodeCtx<'_>, arg: &Arg<V>, what: &str) -> Result<f64> {
    let t = const_tensor(arg).ok_or_else(|| {
        ctx.err(format!(
            "{what} must be known when the model is imported (a constant, an initializer or \
             a shape computation)"
        ))
    })?;
    if t.numel() != 1 {
        return Err(ctx.err(format!(
            "{what} must hold one value, got shape {:?}",
            t.shape()
        )));
    }
    t.item()
}

fn tile<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let reps = super::node::const_ints(ctx, req(ctx, args, 1)?, "repeats")?;
    let dims = f.shape(x);
    if reps.len() != dims.len() {
        return Err(ctx.err(format!(
            "repeats {reps:?} do not match the input's rank {}",
            dims.len()
        )));
    }
    let mut out = dims.clone();
    for (o, &r) in out.iter_mut().zip(&reps) {
        if !(0..=1 << 20).contains(&r) {
            return Err(ctx.err(format!("repeats {reps:?} must be in 0..={}", 1 << 20)));
        }
        *o = o.and_then(|d| d.checked_mul(r as usize));
    }
    if out
        .iter()
        .zip(&dims)
        .any(|(o, d)| o.is_none() && d.is_some())
    {
        return Err(ctx.err(format!("repeats {reps:?} overflow")));
    }
    check_created(ctx, "result", &out)?;
    let mut y = x.clone();
    for (a, &r) in reps.iter().enumerate() {
        y = match r {
            1 => continue,
            0 => f.slice(&y, a as isize, 0, 0, 1)?,
            r => {
                let copies: Vec<&F::Value> = std::iter::repeat_n(&y, r as usize).collect();
                f.concat(&copies, a as isize)?
            }
        };
    }
    plain(y)
}

fn range<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let start_arg = req(ctx, args, 0)?;
    let start = const_scalar(ctx, start_arg, "start")?;
    let limit = const_scalar(ctx, req(ctx, args, 1)?, "limit")?;
    let delta = const_scalar(ctx, req(ctx, args, 2)?, "delta")?;
    let dtype = f.dtype(&start_arg.value);
    if delta == 0.0 || !(start.is_finite() && limit.is_finite() && delta.is_finite()) {
        return Err(ctx.err(format!(
            "range {start}..{limit} with delta {delta} is invalid"
        )));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    if n > MAX_CREATED_ELEMENTS as f64 {
        return Err(ctx.err(format!(
            "range {start}..{limit} with delta {delta} is too long"
        )));
    }
    let n = n as usize;
    let v: Vec<f64> = (0..n).map(|i| start + i as f64 * delta).collect();
    let t = Tensor::from_vec(v, &[n])?.cast(dtype)?;
    Ok(vec![(f.constant(t.clone())?, Some(Known::Full(t)))])
}

fn cumsum<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let a = const_scalar(ctx, req(ctx, args, 1)?, "axis")?;
    let a = axis(ctx, a as i64, r)?;
    let exclusive = ctx.int("exclusive", 0)? != 0;
    let reverse = ctx.int("reverse", 0)? != 0;
    let n = f.dim(x, a).ok_or_else(|| {
        ctx.err("the summed axis must have a size known when the model is imported")
    })?;
    let dtype = f.dtype(x);
    if dtype == DType::Bool {
        return Err(ctx.err("bool input is not supported"));
    }
    // Prefix sums in log2(n) rounds: each adds a copy shifted by 1, 2, 4, ... along the axis
    // (zeros entering from the start, or from the end when reversed).
    let shift = |v: &F::Value, by: usize| -> Result<F::Value> {
        let by = by.min(n);
        let (kept, pad) = if reverse {
            (f.slice(v, a as isize, by as isize, n as isize, 1)?, (0, by))
        } else {
            (f.slice(v, a as isize, 0, (n - by) as isize, 1)?, (by, 0))
        };
        let mut pads = vec![(0usize, 0usize); r];
        if let Some(p) = pads.get_mut(a) {
            *p = pad;
        }
        f.emit(tandem_ir::Op::Pad { pads, value: 0.0 }, &[&kept])
    };
    let mut y = x.clone();
    let mut step = 1usize;
    while step < n {
        y = f.add(&y, &shift(&y, step)?)?;
        step *= 2;
    }
    if exclusive && n > 0 {
        y = shift(&y, 1)?;
    }
    plain(y)
}

#[derive(Clone, Copy)]
enum Norm {
    L1,
    L2,
    SumSquare,
    LogSumExp,
}

fn norm_reduce<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    norm: Norm,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let spec = reduce_spec(ctx, f, args, 18)?;
    let Some((axes, keep)) = spec else {
        // No axes and noop_with_empty_axes: the elementwise part over no axes.
        return plain(match norm {
            Norm::L1 | Norm::L2 => f.abs(x)?,
            Norm::SumSquare => f.square(x)?,
            Norm::LogSumExp => x.clone(),
        });
    };
    plain(match norm {
        Norm::L1 => f.sum(&f.abs(x)?, &axes, keep)?,
        Norm::L2 => f.sqrt(&f.sum(&f.square(x)?, &axes, keep)?)?,
        Norm::SumSquare => f.sum(&f.square(x)?, &axes, keep)?,
        Norm::LogSumExp => f.logsumexp(x, &axes, keep)?,
    })
}

fn selu<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let alpha = ctx.float("alpha", 1.673_263_2)? as f64;
    let gamma = ctx.float("gamma", 1.050_701)? as f64;
    let x = &req(ctx, args, 0)?.value;
    plain(f.mul_scalar(&f.elu(x, alpha)?, gamma)?)
}

fn celu<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let alpha = ctx.float("alpha", 1.0)? as f64;
    if alpha == 0.0 || !alpha.is_finite() {
        return Err(ctx.err(format!(
            "attribute alpha {alpha} must be finite and non-zero"
        )));
    }
    let x = &req(ctx, args, 0)?.value;
    // celu(x) = alpha * elu(x / alpha, 1).
    let e = f.elu(&f.mul_scalar(x, 1.0 / alpha)?, 1.0)?;
    plain(f.mul_scalar(&e, alpha)?)
}

fn modulo<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let fmod = ctx.int("fmod", 0)? != 0;
    let a = &req(ctx, args, 0)?.value;
    let b = &req(ctx, args, 1)?.value;
    let dtype = f.dtype(a);
    if dtype == DType::Bool {
        return Err(ctx.err("bool inputs are not supported"));
    }
    // Integers are exact in f64 (up to 2^53); floats keep their type.
    let work = if dtype.is_float() { dtype } else { DType::F64 };
    let (a, b) = (f.cast(a, work)?, f.cast(b, work)?);
    let q = f.div(&a, &b)?;
    let whole = if fmod {
        // Truncation toward zero: sign(q) * floor(|q|); the result has the sign of a.
        let s = f.unary(UnaryOp::Sign, &q)?;
        f.mul(&s, &f.unary(UnaryOp::Floor, &f.abs(&q)?)?)?
    } else {
        // Python-style: the result has the sign of b.
        f.unary(UnaryOp::Floor, &q)?
    };
    let r = f.sub(&a, &f.mul(&whole, &b)?)?;
    plain(f.cast(&r, dtype)?)
}

fn one_hot<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let idx = &req(ctx, args, 0)?.value;
    let depth = const_scalar(ctx, req(ctx, args, 1)?, "depth")?;
    if !(depth >= 1.0 && depth <= (1u64 << 24) as f64) {
        return Err(ctx.err(format!("depth {depth} must be in 1..={}", 1u64 << 24)));
    }
    let depth = depth as usize;
    let values = const_tensor(req(ctx, args, 2)?).ok_or_else(|| {
        ctx.err("values must be known when the model is imported (a constant or initializer)")
    })?;
    let vals = values.to_f64_vec()?;
    let [off, on] = vals.as_slice() else {
        return Err(ctx.err(format!(
            "values must hold [off, on], got shape {:?}",
            values.shape()
        )));
    };
    let r = f.rank(idx);
    let a = axis(ctx, ctx.int("axis", -1)?, r + 1)?;
    let mut out = f.shape(idx);
    out.push(Some(depth));
    check_created(ctx, "result", &out)?;
    let i = f.cast(idx, DType::I64)?;
    // Negative indices count from the end of the depth.
    let neg = f.scalar(BinaryOp::Lt, &i, 0.0, false)?;
    let i = f.where_(&neg, &f.add_scalar(&i, depth as f64)?, &i)?;
    let y = f.emit(
        tandem_ir::Op::OneHot {
            depth,
            on: *on,
            off: *off,
            dtype: values.dtype(),
        },
        &[&i],
    )?;
    if a == r {
        return plain(y);
    }
    // The IR adds the class axis last; move it to `a`.
    let perm: Vec<isize> = (0..a)
        .chain(std::iter::once(r))
        .chain(a..r)
        .map(|v| v as isize)
        .collect();
    plain(f.permute(&y, &perm)?)
}

fn gather_elements<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let a = axis(ctx, ctx.int("axis", 0)?, r)?;
    let i = f.cast(&req(ctx, args, 1)?.value, DType::I64)?;
    // Negative indices count from the end of the axis.
    let i = match f.dim(x, a) {
        Some(d) => {
            let neg = f.scalar(BinaryOp::Lt, &i, 0.0, false)?;
            f.where_(&neg, &f.add_scalar(&i, d as f64)?, &i)?
        }
        None => i,
    };
    plain(f.gather(x, a as isize, &i)?)
}

fn trilu<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let upper = ctx.int("upper", 1)? != 0;
    let k = match super::node::opt(args, 1) {
        Some(a) => const_scalar(ctx, a, "k")? as i64,
        None => 0,
    };
    let r = f.rank(x);
    let (m, n) = match (
        r.checked_sub(2).and_then(|i| f.dim(x, i)),
        f.dim(x, r.wrapping_sub(1)),
    ) {
        (Some(m), Some(n)) if r >= 2 => (m, n),
        _ => {
            return Err(
                ctx.err("the input needs rank >= 2 with the last two dims known at import time")
            )
        }
    };
    check_created(ctx, "mask", &[Some(m), Some(n)])?;
    let mut keep = Vec::with_capacity(m * n);
    for i in 0..m as i64 {
        for j in 0..n as i64 {
            keep.push(if upper { j - i >= k } else { j - i <= k });
        }
    }
    let mask = f.constant(Tensor::from_vec(keep, &[m, n])?)?;
    plain(f.where_(&mask, x, &f.zeros_like(x)?)?)
}

fn group_norm<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let groups = ctx.int("num_groups", 0)?;
    let eps = ctx.float("epsilon", 1e-5)? as f64;
    let dims = f.shape(x);
    let r = dims.len();
    let c = match dims.get(1) {
        Some(Some(c)) if r >= 3 => *c,
        _ => {
            return Err(
                ctx.err("the input must be [N, C, ...] with C known when the model is imported")
            )
        }
    };
    if groups < 1 || c % groups as usize != 0 {
        return Err(ctx.err(format!(
            "attribute num_groups {groups} must be positive and divide the {c} channels"
        )));
    }
    let g = groups as usize;
    let rest: Option<usize> = dims[2..].iter().copied().product();
    let xg = match (dims[0], rest) {
        (_, Some(rest)) => f.reshape(x, &[-1, g as isize, (c / g * rest) as isize])?,
        (Some(n), None) => f.reshape(x, &[n as isize, g as isize, -1])?,
        (None, None) => return Err(ctx.err("more than one dim is only known at run time")),
    };
    let mean = f.mean(&xg, &[2], true)?;
    let xc = f.sub(&xg, &mean)?;
    let var = f.mean(&f.square(&xc)?, &[2], true)?;
    let y = f.mul(&xc, &f.rsqrt(&f.add_scalar(&var, eps)?)?)?;
    let scale = &req(ctx, args, 1)?.value;
    let bias = &req(ctx, args, 2)?.value;
    // Opset 18 gives one scale and bias per group, opset 21 one per channel.
    let per_group = f.dim(scale, 0) == Some(g) && g != c;
    if per_group {
        let s = f.reshape(scale, &[1, g as isize, 1])?;
        let b = f.reshape(bias, &[1, g as isize, 1])?;
        return plain(f.reshape_like(&f.add(&f.mul(&y, &s)?, &b)?, x)?);
    }
    let y = f.reshape_like(&y, x)?;
    let mut per_channel = vec![1isize; r];
    per_channel[1] = -1;
    let s = f.reshape(scale, &per_channel)?;
    let b = f.reshape(bias, &per_channel)?;
    plain(f.add(&f.mul(&y, &s)?, &b)?)
}

fn is_inf<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let pos = ctx.int("detect_positive", 1)? != 0;
    let neg = ctx.int("detect_negative", 1)? != 0;
    let p = f.scalar(BinaryOp::Eq, x, f64::INFINITY, false)?;
    let n = f.scalar(BinaryOp::Eq, x, f64::NEG_INFINITY, false)?;
    plain(match (pos, neg) {
        (true, true) => f.binary(BinaryOp::Or, &p, &n)?,
        (true, false) => p,
        (false, true) => n,
        (false, false) => f.full_like(x, 0.0, Some(DType::Bool))?,
    })
}

/// Largest `k` of `TopK` (each selected element costs a handful of ops).
const MAX_TOP_K: usize = 1 << 12;

/// `TopK` as `k` rounds of arg-max (or arg-min) along the axis, each masking the element it
/// picked; ties go to the lower index, like ONNX Runtime. Values and int64 indices, sorted.
fn top_k<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let a = axis(ctx, ctx.int("axis", -1)?, r)?;
    let largest = ctx.int("largest", 1)? != 0;
    let k = if ctx.opset < 10 {
        ctx.int("k", -1)? as f64
    } else {
        const_scalar(ctx, req(ctx, args, 1)?, "k")?
    };
    let n = f
        .dim(x, a)
        .ok_or_else(|| ctx.err("the axis must have a size known when the model is imported"))?;
    if !(k >= 1.0 && k <= n as f64 && k <= MAX_TOP_K as f64) {
        return Err(ctx.err(format!(
            "k = {k} must be in 1..={} (axis size {n}, limit {MAX_TOP_K})",
            n.min(MAX_TOP_K)
        )));
    }
    let k = k as usize;
    let dtype = f.dtype(x);
    if dtype == DType::Bool {
        return Err(ctx.err("bool input is not supported"));
    }
    let mut cur = if dtype.is_float() {
        x.clone()
    } else {
        f.cast(x, DType::F64)?
    };
    let mut iota_shape = vec![1usize; r];
    iota_shape[a] = n;
    let iota: Vec<i64> = (0..n as i64).collect();
    let iota = f.constant(Tensor::from_vec(iota, &iota_shape)?)?;
    let (op, fill) = if largest {
        (ArgReduceOp::ArgMax, f64::NEG_INFINITY)
    } else {
        (ArgReduceOp::ArgMin, f64::INFINITY)
    };
    let mut ids = Vec::with_capacity(k);
    let mut vals = Vec::with_capacity(k);
    for step in 0..k {
        let i = f.emit(
            tandem_ir::Op::ArgReduce {
                op,
                axis: a,
                keepdim: true,
            },
            &[&cur],
        )?;
        vals.push(f.gather(x, a as isize, &i)?);
        if step + 1 < k {
            let picked = f.binary(BinaryOp::Eq, &iota, &i)?;
            cur = f.where_(&picked, &f.full_like(&cur, fill, None)?, &cur)?;
        }
        ids.push(i);
    }
    let cat = |v: &[F::Value]| -> Result<F::Value> {
        let refs: Vec<&F::Value> = v.iter().collect();
        f.concat(&refs, a as isize)
    };
    Ok(vec![(cat(&vals)?, None), (cat(&ids)?, None)])
}
