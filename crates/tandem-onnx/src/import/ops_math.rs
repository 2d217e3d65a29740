//! Elementwise math, matrix products, activations, softmax and reductions.

use super::node::{axis, const_ints, const_tensor, one, opt, req, Args, NodeCtx, Outs};
use tandem_ir::{Emit, EmitExt, Functional, Op};
use tandem_tensor::{ArgReduceOp, BinaryOp, DType, ReduceOp, Result, UnaryOp};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    let unary =
        |u: UnaryOp| -> Result<Outs<F::Value>> { one(f.unary(u, &req(ctx, args, 0)?.value)?) };
    let binary = |b: BinaryOp| -> Result<Outs<F::Value>> {
        one(f.binary(b, &req(ctx, args, 0)?.value, &req(ctx, args, 1)?.value)?)
    };
    Some(match op {
        "Abs" => unary(UnaryOp::Abs),
        "Neg" => unary(UnaryOp::Neg),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Relu" => unary(UnaryOp::Relu),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Tanh" => unary(UnaryOp::Tanh),
        "Erf" => unary(UnaryOp::Erf),
        "Reciprocal" => unary(UnaryOp::Recip),
        "Floor" => unary(UnaryOp::Floor),
        "Ceil" => unary(UnaryOp::Ceil),
        "Round" => unary(UnaryOp::Round),
        "Sign" => unary(UnaryOp::Sign),
        "Sin" => unary(UnaryOp::Sin),
        "Cos" => unary(UnaryOp::Cos),
        "Not" => unary(UnaryOp::Not),
        "Add" => binary(BinaryOp::Add),
        "Sub" => binary(BinaryOp::Sub),
        "Mul" => binary(BinaryOp::Mul),
        "Div" => div(ctx, f, args),
        "Pow" => pow(ctx, f, args),
        "Equal" => binary(BinaryOp::Eq),
        "Less" => binary(BinaryOp::Lt),
        "LessOrEqual" => binary(BinaryOp::Le),
        "Greater" => binary(BinaryOp::Gt),
        "GreaterOrEqual" => binary(BinaryOp::Ge),
        "And" => binary(BinaryOp::And),
        "Or" => binary(BinaryOp::Or),
        "Sum" => variadic(ctx, f, args, BinaryOp::Add, false),
        "Mean" => variadic(ctx, f, args, BinaryOp::Add, true),
        "Max" => variadic(ctx, f, args, BinaryOp::Maximum, false),
        "Min" => variadic(ctx, f, args, BinaryOp::Minimum, false),
        "Where" => (|| {
            one(f.where_(
                &req(ctx, args, 0)?.value,
                &req(ctx, args, 1)?.value,
                &req(ctx, args, 2)?.value,
            )?)
        })(),
        "LeakyRelu" => (|| {
            let alpha = ctx.float("alpha", 0.01)?;
            one(f.leaky_relu(&req(ctx, args, 0)?.value, alpha as f64)?)
        })(),
        "Elu" => (|| {
            let alpha = ctx.float("alpha", 1.0)?;
            one(f.elu(&req(ctx, args, 0)?.value, alpha as f64)?)
        })(),
        "Softplus" => (|| one(f.softplus(&req(ctx, args, 0)?.value, 1.0, f64::INFINITY)?))(),
        "PRelu" => (|| {
            let x = &req(ctx, args, 0)?.value;
            let neg = f.scalar(BinaryOp::Lt, x, 0.0, false)?;
            let scaled = f.mul(x, &req(ctx, args, 1)?.value)?;
            one(f.where_(&neg, &scaled, x)?)
        })(),
        "HardSwish" => (|| {
            let x = &req(ctx, args, 0)?.value;
            let g = f.add_scalar(&f.mul_scalar(x, 1.0 / 6.0)?, 0.5)?;
            one(f.mul(x, &f.clamp(&g, Some(0.0), Some(1.0))?)?)
        })(),
        "HardSigmoid" => (|| {
            let alpha = ctx.float("alpha", 0.2)? as f64;
            let beta = ctx.float("beta", 0.5)? as f64;
            let x = &req(ctx, args, 0)?.value;
            let y = f.add_scalar(&f.mul_scalar(x, alpha)?, beta)?;
            one(f.clamp(&y, Some(0.0), Some(1.0))?)
        })(),
        "Gelu" => (|| {
            let approx = ctx.string("approximate")?.unwrap_or_else(|| "none".into());
            let tanh = match approx.as_str() {
                "none" => false,
                "tanh" => true,
                other => return Err(ctx.err(format!("unknown approximate '{other}'"))),
            };
            one(f.gelu(&req(ctx, args, 0)?.value, tanh)?)
        })(),
        "Identity" => (|| {
            Ok(vec![(
                req(ctx, args, 0)?.value.clone(),
                req(ctx, args, 0)?.known.clone(),
            )])
        })(),
        "Dropout" => dropout(ctx, f, args),
        "MatMul" => (|| one(f.matmul(&req(ctx, args, 0)?.value, &req(ctx, args, 1)?.value)?))(),
        "Gemm" => gemm(ctx, f, args),
        "Softmax" => softmax(ctx, f, args, false),
        "LogSoftmax" => softmax(ctx, f, args, true),
        "ReduceMean" => reduce(ctx, f, args, ReduceOp::Mean, 18),
        "ReduceSum" => reduce(ctx, f, args, ReduceOp::Sum, 13),
        "ReduceMax" => reduce(ctx, f, args, ReduceOp::Max, 18),
        "ReduceMin" => reduce(ctx, f, args, ReduceOp::Min, 18),
        "ReduceProd" => reduce(ctx, f, args, ReduceOp::Prod, 18),
        "ArgMax" => arg_reduce(ctx, f, args, ArgReduceOp::ArgMax),
        "ArgMin" => arg_reduce(ctx, f, args, ArgReduceOp::ArgMin),
        "Clip" => clip(ctx, f, args),
        _ => return None,
    })
}

fn div<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let a = &req(ctx, args, 0)?.value;
    let b = &req(ctx, args, 1)?.value;
    let (da, db) = (f.dtype(a), f.dtype(b));
    if da.is_float() || db.is_float() {
        return one(f.div(a, b)?);
    }
    // ONNX integer division truncates toward zero: divide exactly in f64, cast back.
    let q = f.div(&f.cast(a, DType::F64)?, &f.cast(b, DType::F64)?)?;
    one(f.cast(&q, da)?)
}

fn pow<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let e = req(ctx, args, 1)?;
    if let Some(t) = const_tensor(e) {
        if t.numel() == 1 && f.dtype(x).is_float() {
            return one(f.pow_scalar(x, t.item()?)?);
        }
    }
    let ev = f.cast(&e.value, f.dtype(x))?;
    one(f.emit(Op::Binary(BinaryOp::Pow), &[x, &ev])?)
}

fn variadic<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    op: BinaryOp,
    mean: bool,
) -> Result<Outs<F::Value>> {
    let mut acc = req(ctx, args, 0)?.value.clone();
    let mut n = 1usize;
    for a in args.iter().skip(1).flatten() {
        acc = f.binary(op, &acc, &a.value)?;
        n += 1;
    }
    if mean {
        acc = f.mul_scalar(&acc, 1.0 / n as f64)?;
    }
    one(acc)
}

fn dropout<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    if let Some(t) = opt(args, 2) {
        let training = const_tensor(t).map(|t| t.item()).transpose()?;
        if training != Some(0.0) {
            return Err(ctx.err("only inference-mode Dropout (training_mode false) is supported"));
        }
    }
    let x = &req(ctx, args, 0)?.value;
    let mask = f.full_like(x, 1.0, Some(DType::Bool))?;
    Ok(vec![(x.clone(), None), (mask, None)])
}

fn gemm<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let alpha = ctx.float("alpha", 1.0)? as f64;
    let beta = ctx.float("beta", 1.0)? as f64;
    let ta = ctx.int("transA", 0)? != 0;
    let tb = ctx.int("transB", 0)? != 0;
    let a = &req(ctx, args, 0)?.value;
    let b = &req(ctx, args, 1)?.value;
    for (v, n) in [(a, "A"), (b, "B")] {
        if f.rank(v) != 2 {
            return Err(ctx.err(format!("input {n} must be 2-D, got rank {}", f.rank(v))));
        }
    }
    let a = if ta { f.transpose(a, 0, 1)? } else { a.clone() };
    let b = if tb { f.transpose(b, 0, 1)? } else { b.clone() };
    let mut y = f.matmul2(&a, &b)?;
    if alpha != 1.0 {
        y = f.mul_scalar(&y, alpha)?;
    }
    if let Some(c) = opt(args, 2) {
        let c = if beta != 1.0 {
            f.mul_scalar(&c.value, beta)?
        } else {
            c.value.clone()
        };
        y = f.add(&y, &c)?;
    }
    one(y)
}

fn softmax<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    log: bool,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let sm = |v: &F::Value, a: isize| {
        if log {
            f.log_softmax(v, a)
        } else {
            f.softmax(v, a)
        }
    };
    if ctx.opset >= 13 {
        let a = axis(ctx, ctx.int("axis", -1)?, r)?;
        return one(sm(x, a as isize)?);
    }
    // Before opset 13: the input is coerced to 2-D [prod(d[..axis]), prod(d[axis..])].
    let a = ctx.int("axis", 1)?;
    let a = if a < 0 { a + r as i64 } else { a };
    if a < 0 || a > r as i64 {
        return Err(ctx.err(format!("axis {a} is out of range for rank {r}")));
    }
    let a = a as usize;
    if r >= 1 && a == r - 1 {
        return one(sm(x, -1)?);
    }
    let flat = coerce_2d(f, x, a)?;
    let y = sm(&flat, 1)?;
    one(f.reshape_like(&y, x)?)
}

/// `x` as 2-D `[prod(d[..axis]), prod(d[axis..])]` (ONNX's Flatten).
pub(super) fn coerce_2d<F: Emit>(f: &F, x: &F::Value, axis: usize) -> Result<F::Value> {
    let r = f.rank(x);
    if r == 0 {
        return f.reshape(x, &[1, 1]);
    }
    if axis == 0 {
        let all = f.flatten(x, 0, r as isize - 1)?;
        return f.unsqueeze(&all, 0);
    }
    if axis >= r {
        let all = f.flatten(x, 0, r as isize - 1)?;
        return f.unsqueeze(&all, 1);
    }
    let tail = f.flatten(x, axis as isize, r as isize - 1)?;
    f.flatten(&tail, 0, axis as isize - 1)
}

fn reduce<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    op: ReduceOp,
    axes_input_from: i64,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    match reduce_spec(ctx, f, args, axes_input_from)? {
        None => one(x.clone()),
        Some((axes, keep)) => one(f.reduce(op, x, &axes, keep)?),
    }
}

/// The axes (normalized; empty = all) and `keepdims` of a reduce node whose axes are an
/// input from opset `axes_input_from` on (an attribute before); `None` when the node is a
/// no-op (`noop_with_empty_axes` with no axes).
pub(super) fn reduce_spec<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    axes_input_from: i64,
) -> Result<Option<(Vec<isize>, bool)>> {
    let x = &req(ctx, args, 0)?.value;
    let keep = ctx.int("keepdims", 1)? != 0;
    let axes = if ctx.opset >= axes_input_from {
        match opt(args, 1) {
            Some(a) => const_ints(ctx, a, "axes")?,
            None => Vec::new(),
        }
    } else {
        ctx.ints("axes")?.unwrap_or_default()
    };
    if axes.is_empty() && ctx.int("noop_with_empty_axes", 0)? != 0 {
        return Ok(None);
    }
    let r = f.rank(x);
    let axes: Vec<isize> = axes
        .iter()
        .map(|&a| axis(ctx, a, r).map(|a| a as isize))
        .collect::<Result<_>>()?;
    Ok(Some((axes, keep)))
}

fn arg_reduce<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    op: ArgReduceOp,
) -> Result<Outs<F::Value>> {
    if ctx.int("select_last_index", 0)? != 0 {
        return Err(ctx.err("select_last_index = 1 is not supported"));
    }
    let x = &req(ctx, args, 0)?.value;
    let a = axis(ctx, ctx.int("axis", 0)?, f.rank(x))?;
    let keepdim = ctx.int("keepdims", 1)? != 0;
    one(f.emit(
        Op::ArgReduce {
            op,
            axis: a,
            keepdim,
        },
        &[x],
    )?)
}

fn clip<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    if ctx.opset < 11 {
        let lo = ctx.float("min", f32::NEG_INFINITY)? as f64;
        let hi = ctx.float("max", f32::INFINITY)? as f64;
        return one(f.clamp(x, Some(lo), Some(hi))?);
    }
    let mut y = x.clone();
    for (i, op) in [(1, BinaryOp::Maximum), (2, BinaryOp::Minimum)] {
        if let Some(b) = opt(args, i) {
            y = match const_tensor(b) {
                Some(t) if t.numel() == 1 => f.scalar(op, &y, t.item()?, false)?,
                _ => f.binary(op, &y, &b.value)?,
            };
        }
    }
    one(y)
}
