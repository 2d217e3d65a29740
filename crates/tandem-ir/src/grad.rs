//! Gradient (vector-Jacobian product) rules, one short function per op, written once over
//! [`Emit`] so that eager mode (tape) and graph mode (symbolic `gradients`) use the same rules,
//! and gradients are ordinary values that can themselves be differentiated.
//!
//! A rule receives the op's inputs, its output `y` and the upstream gradient `g` (shaped like
//! `y`), and returns one gradient per input (`None` = no gradient: integer inputs, indices,
//! or inputs the caller does not want). Rules do NOT undo broadcasting: [`backprop`] (the
//! driver's per-op step) sums each gradient back to its input's shape.

use crate::emit::{Emit, EmitExt};
use crate::op::Op;
use tandem_tensor::{BinaryOp, Error, ReduceOp, Result, UnaryOp};

type Grads<V> = Vec<Option<V>>;

/// True when the op has a gradient w.r.t. at least one input.
pub fn is_differentiable(op: &Op) -> bool {
    !matches!(
        op,
        Op::Constant(_)
            | Op::Full { .. }
            | Op::FullLike { .. }
            | Op::Random { .. }
            | Op::DimSize { .. }
            | Op::ArgReduce { .. }
            | Op::OneHot { .. }
            | Op::StopGradient
    ) && match op {
        Op::Binary(b) | Op::Scalar { op: b, .. } => !b.is_comparison() && !b.is_logical(),
        Op::Unary(UnaryOp::Not) => false,
        _ => true,
    }
}

/// The driver's per-op step: applies the op's rule, then sums each input gradient back to the
/// input's shape where broadcasting made them differ. `wanted[i]` says whether input `i` needs
/// a gradient (rules skip the work for the others).
pub fn backprop<E: Emit + ?Sized>(
    e: &E,
    op: &Op,
    inputs: &[&E::Value],
    y: &E::Value,
    g: &E::Value,
    wanted: &[bool],
) -> Result<Grads<E::Value>> {
    let mut grads = vjp(e, op, inputs, y, g, wanted)?;
    for (i, gi) in grads.iter_mut().enumerate() {
        if !wanted.get(i).copied().unwrap_or(false) {
            *gi = None;
            continue;
        }
        if let Some(v) = gi.take() {
            let x = inputs[i];
            let v = e.sum_to_like(&v, x)?;
            // Gradients of float inputs keep the input's dtype (e.g. f16 params).
            let v = if e.dtype(x).is_float() {
                e.cast(&v, e.dtype(x))?
            } else {
                v
            };
            *gi = Some(v);
        }
    }
    Ok(grads)
}

/// Adds a new gradient contribution to an accumulated one.
pub fn accumulate<E: Emit + ?Sized>(
    e: &E,
    acc: Option<E::Value>,
    new: E::Value,
) -> Result<E::Value> {
    match acc {
        None => Ok(new),
        Some(a) => e.add(&a, &new),
    }
}

fn none<V>(n: usize) -> Grads<V> {
    (0..n).map(|_| None).collect()
}

/// The gradient of a selection (`gather`, `index_select`, `masked_select`) with respect to its
/// source `x`: the upstream gradient accumulated into zeros shaped like `x` by the adjoint op.
fn scatter_into_zeros<E: Emit + ?Sized>(
    e: &E,
    adjoint: Op,
    x: &E::Value,
    index: &E::Value,
    g: &E::Value,
) -> Result<E::Value> {
    let z = e.zeros_like(x)?;
    e.emit(adjoint, &[&z, index, g])
}

/// The gradients of an accumulation (`scatter_add`, `index_add`) into `[base, index, source]`:
/// the base receives `g` unchanged, the index none, the source the selection of `g` by the
/// adjoint op.
fn accumulation_grads<E: Emit + ?Sized>(
    e: &E,
    adjoint: Op,
    index: &E::Value,
    g: &E::Value,
    want_source: bool,
) -> Result<Grads<E::Value>> {
    let source = if want_source {
        Some(e.emit(adjoint, &[g, index])?)
    } else {
        None
    };
    Ok(vec![Some(g.clone()), None, source])
}

fn mask_of<E: Emit + ?Sized>(e: &E, cond: &E::Value, like: &E::Value) -> Result<E::Value> {
    e.cast(cond, e.dtype(like))
}

/// The vector-Jacobian product of one op (without broadcast reduction; see [`backprop`]).
pub fn vjp<E: Emit + ?Sized>(
    e: &E,
    op: &Op,
    inputs: &[&E::Value],
    y: &E::Value,
    g: &E::Value,
    wanted: &[bool],
) -> Result<Grads<E::Value>> {
    let want = |i: usize| wanted.get(i).copied().unwrap_or(false);
    let x = inputs[0];
    let n = inputs.len();
    let one = |v: E::Value| -> Grads<E::Value> {
        let mut out = none(n);
        out[0] = Some(v);
        out
    };
    if !is_differentiable(op) {
        return Ok(none(n));
    }
    Ok(match op {
        Op::Unary(u) => one(unary_rule(e, *u, x, y, g)?),
        Op::Binary(b) => {
            let (a, bb) = (inputs[0], inputs[1]);
            let (ga, gb) = binary_rule(e, *b, a, bb, y, g, want(0), want(1))?;
            vec![ga, gb]
        }
        Op::Scalar {
            op: b,
            value,
            scalar_on_left,
        } => one(scalar_rule(e, *b, *value, *scalar_on_left, x, y, g)?),
        // where(c, a, b): the gradient flows to the branch that was taken.
        Op::Where => {
            let c = inputs[0];
            let zero = e.zeros_like(g)?;
            let ga = if want(1) {
                Some(e.where_(c, g, &zero)?)
            } else {
                None
            };
            let gb = if want(2) {
                Some(e.where_(c, &zero, g)?)
            } else {
                None
            };
            vec![None, ga, gb]
        }
        // cast: cast the gradient back (no gradient into integer inputs).
        Op::Cast(_) => {
            if e.dtype(x).is_float() && e.dtype(g).is_float() {
                one(e.cast(g, e.dtype(x))?)
            } else {
                none(n)
            }
        }
        Op::Reduce {
            op: r,
            axes,
            keepdim,
        } => one(reduce_rule(e, *r, axes, *keepdim, x, y, g)?),
        // sum_to_like: broadcast the gradient back out.
        Op::SumToLike => vec![Some(e.expand_like(g, x)?), None],
        // Movement ops: undo the movement on the gradient.
        Op::Reshape(_) | Op::Flatten { .. } | Op::Unsqueeze(_) | Op::Squeeze(_) => {
            one(e.reshape_like(g, x)?)
        }
        Op::ReshapeLike => vec![Some(e.reshape_like(g, x)?), None],
        Op::Permute(p) => {
            let mut inv = vec![0isize; p.len()];
            for (i, &pi) in p.iter().enumerate() {
                inv[pi] = i as isize;
            }
            one(e.permute(g, &inv)?)
        }
        Op::Expand(_) => one(e.sum_to_like(g, x)?),
        Op::ExpandLike => vec![Some(e.sum_to_like(g, x)?), None],
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => one(e.emit(
            Op::SliceBackward {
                axis: *axis,
                start: *start,
                end: *end,
                step: *step,
            },
            &[g, x],
        )?),
        Op::SliceBackward {
            axis,
            start,
            end,
            step,
        } => vec![
            Some(e.emit(
                Op::Slice {
                    axis: *axis,
                    start: *start,
                    end: *end,
                    step: *step,
                },
                &[g],
            )?),
            None,
        ],
        // pad: slice the padded border away.
        Op::Pad { pads, .. } => {
            let mut v = g.clone();
            for (d, &(b, a)) in pads.iter().enumerate() {
                if b > 0 || a > 0 {
                    let end = if a > 0 { -(a as isize) } else { isize::MAX };
                    v = e.slice(&v, d as isize, b as isize, end, 1)?;
                }
            }
            one(v)
        }
        // concat: each input gets its slice of the gradient.
        Op::Concat(axis) => {
            let mut out = none(n);
            let mut offset = 0usize;
            for (i, xi) in inputs.iter().enumerate() {
                let len = e.dim(xi, *axis).ok_or_else(|| {
                    Error::invalid(
                        "concat",
                        "gradient needs the concatenated sizes to be known when the graph is built",
                    )
                })?;
                if want(i) {
                    out[i] = Some(e.narrow(g, *axis as isize, offset, len)?);
                }
                offset += len;
            }
            out
        }
        // gather <-> scatter_add, index_select <-> index_add, masked_select <-> masked_scatter:
        // each selection's gradient is its adjoint accumulation into zeros, and each
        // accumulation passes the gradient to its base and selects it for its source.
        Op::Gather(axis) => one(scatter_into_zeros(
            e,
            Op::ScatterAdd(*axis),
            x,
            inputs[1],
            g,
        )?),
        Op::IndexSelect(axis) => one(scatter_into_zeros(e, Op::IndexAdd(*axis), x, inputs[1], g)?),
        Op::MaskedSelect => one(scatter_into_zeros(e, Op::MaskedScatter, x, inputs[1], g)?),
        Op::ScatterAdd(axis) => accumulation_grads(e, Op::Gather(*axis), inputs[1], g, want(2))?,
        Op::IndexAdd(axis) => accumulation_grads(e, Op::IndexSelect(*axis), inputs[1], g, want(2))?,
        Op::MaskedScatter => {
            let m = inputs[1];
            let zero = e.zeros_like(g)?;
            vec![
                if want(0) {
                    Some(e.where_(m, &zero, g)?)
                } else {
                    None
                },
                None,
                if want(2) {
                    Some(e.emit(Op::MaskedSelect, &[g, m])?)
                } else {
                    None
                },
            ]
        }
        // matmul: dA = G B^T, dB = A^T G (batch broadcasting undone by the driver).
        Op::MatMul => {
            let (a, b) = (inputs[0], inputs[1]);
            let ga = if want(0) {
                Some(e.matmul2(g, &e.transpose(b, -2, -1)?)?)
            } else {
                None
            };
            let gb = if !want(1) {
                None
            } else if e.rank(a) == 2 && e.rank(b) == 2 && e.is_transposed_view(b) {
                // gb^T = g^T a: a weight used as `w.t()` gets a row-major gradient of its own
                // shape once the transpose's gradient undoes the view, with no copy.
                let gbt = e.matmul2(&e.transpose(g, -2, -1)?, a)?;
                Some(e.transpose(&gbt, -2, -1)?)
            } else {
                Some(e.matmul2(&e.transpose(a, -2, -1)?, g)?)
            };
            vec![ga, gb]
        }
        // conv2d: dx = conv_transpose(G, W), dW = correlate(x, G), db = sum of G over N, H, W.
        Op::Conv2d(p) => {
            let w = inputs[1];
            let mut out = none(n);
            if want(0) {
                out[0] = Some(e.emit(Op::Conv2dInputGrad(*p), &[g, w, x])?);
            }
            if want(1) {
                out[1] = Some(e.emit(Op::Conv2dWeightGrad(*p), &[x, g, w])?);
            }
            if n > 2 && want(2) {
                out[2] = Some(e.sum(g, &[0, 2, 3], false)?);
            }
            out
        }
        // Both conv gradients are bilinear; their VJPs are the other two convolutions.
        Op::Conv2dInputGrad(p) => {
            let (g0, w) = (inputs[0], inputs[1]);
            vec![
                if want(0) {
                    Some(e.conv2d(g, w, None, *p)?)
                } else {
                    None
                },
                if want(1) {
                    Some(e.emit(Op::Conv2dWeightGrad(*p), &[g, g0, w])?)
                } else {
                    None
                },
                None,
            ]
        }
        Op::Conv2dWeightGrad(p) => {
            let (xx, g0) = (inputs[0], inputs[1]);
            vec![
                if want(0) {
                    Some(e.emit(Op::Conv2dInputGrad(*p), &[g0, g, xx])?)
                } else {
                    None
                },
                if want(1) {
                    Some(e.conv2d(xx, g, None, *p)?)
                } else {
                    None
                },
                None,
            ]
        }
        Op::MaxPool2d(p) => one(e.emit(Op::MaxPool2dBackward(*p), &[g, x])?),
        Op::MaxPool2dBackward(_) => {
            if want(0) {
                return Err(Error::invalid(
                    "max_pool2d_backward",
                    "the second derivative of max pooling is not supported",
                ));
            }
            none(n)
        }
        Op::AvgPool2d(p) => one(e.emit(Op::AvgPool2dBackward(*p), &[g, x])?),
        // Average pooling is linear: its backward's VJP is the pooling itself.
        Op::AvgPool2dBackward(p) => vec![Some(e.avg_pool2d(g, *p)?), None],
        Op::AdaptiveAvgPool2d(_) => one(e.emit(Op::AdaptiveAvgPool2dBackward, &[g, x])?),
        Op::AdaptiveAvgPool2dBackward => {
            let g0 = inputs[0];
            let (oh, ow) = (e.dim(g0, 2), e.dim(g0, 3));
            match (oh, ow) {
                (Some(oh), Some(ow)) => {
                    vec![Some(e.emit(Op::AdaptiveAvgPool2d([oh, ow]), &[g])?), None]
                }
                _ => {
                    return Err(Error::invalid(
                        "adaptive_avg_pool2d_backward",
                        "output size must be known",
                    ))
                }
            }
        }
        // softmax: y * (g - sum(g * y)).
        Op::Softmax(axis) => {
            let gy = e.mul(g, y)?;
            let s = e.sum(&gy, &[*axis as isize], true)?;
            one(e.mul(y, &e.sub(g, &s)?)?)
        }
        // log_softmax: g - exp(y) * sum(g).
        Op::LogSoftmax(axis) => {
            let s = e.sum(g, &[*axis as isize], true)?;
            one(e.sub(g, &e.mul(&e.exp(y)?, &s)?)?)
        }
        // cross_entropy: (softmax(logits) - smoothed one-hot) * g, zero for ignored targets.
        Op::CrossEntropy {
            ignore_index,
            label_smoothing,
        } => {
            let t = inputs[1];
            if !want(0) {
                return Ok(none(n));
            }
            one(cross_entropy_grad(
                e,
                x,
                t,
                g,
                *ignore_index,
                *label_smoothing,
            )?)
        }
        Op::Constant(_)
        | Op::Full { .. }
        | Op::FullLike { .. }
        | Op::Random { .. }
        | Op::DimSize { .. }
        | Op::ArgReduce { .. }
        | Op::StopGradient
        | Op::OneHot { .. } => none(n),
    })
}

fn unary_rule<E: Emit + ?Sized>(
    e: &E,
    u: UnaryOp,
    x: &E::Value,
    y: &E::Value,
    g: &E::Value,
) -> Result<E::Value> {
    use UnaryOp::*;
    match u {
        // d(-x) = -1
        Neg => e.neg(g),
        // d|x| = sign(x)
        Abs => e.mul(g, &e.unary(Sign, x)?),
        // d e^x = e^x
        Exp => e.mul(g, y),
        // d ln x = 1/x
        Log => e.div(g, x),
        // d sqrt x = 1 / (2 sqrt x)
        Sqrt => e.div(&e.mul_scalar(g, 0.5)?, y),
        // d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
        Rsqrt => e.mul(&e.mul_scalar(g, -0.5)?, &e.mul(&e.square(y)?, y)?),
        // d 1/x = -1/x^2 = -y^2
        Recip => e.mul(&e.neg(g)?, &e.square(y)?),
        // d sin x = cos x
        Sin => e.mul(g, &e.unary(Cos, x)?),
        // d cos x = -sin x
        Cos => e.mul(&e.neg(g)?, &e.unary(Sin, x)?),
        // d tanh x = 1 - tanh^2 x
        Tanh => e.mul(g, &e.rsub_scalar(&e.square(y)?, 1.0)?),
        // d sigmoid x = s (1 - s)
        Sigmoid => e.mul(g, &e.mul(y, &e.rsub_scalar(y, 1.0)?)?),
        // d relu x = [x > 0]
        Relu => e.gt_mask_mul(g, x, 0.0),
        // d erf x = 2/sqrt(pi) e^{-x^2}
        Erf => {
            let k = 2.0 / std::f64::consts::PI.sqrt();
            e.mul(g, &e.mul_scalar(&e.exp(&e.neg(&e.square(x)?)?)?, k)?)
        }
        // piecewise constant: zero gradient
        Sign | Floor | Ceil | Round => e.zeros_like(g),
        // d x^2 = 2x
        Square => e.mul(g, &e.mul_scalar(x, 2.0)?),
        // d ln(1+x) = 1/(1+x)
        Log1p => e.div(g, &e.add_scalar(x, 1.0)?),
        // d (e^x - 1) = e^x = y + 1
        Expm1 => e.mul(g, &e.add_scalar(y, 1.0)?),
        Not => Err(Error::invalid("logical_not", "not differentiable")),
    }
}

#[allow(clippy::too_many_arguments)]
fn binary_rule<E: Emit + ?Sized>(
    e: &E,
    b: BinaryOp,
    x0: &E::Value,
    x1: &E::Value,
    y: &E::Value,
    g: &E::Value,
    w0: bool,
    w1: bool,
) -> Result<(Option<E::Value>, Option<E::Value>)> {
    let opt = |want: bool, f: &dyn Fn() -> Result<E::Value>| -> Result<Option<E::Value>> {
        if want {
            f().map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(match b {
        // d(a+b) = (1, 1)
        BinaryOp::Add => (opt(w0, &|| Ok(g.clone()))?, opt(w1, &|| Ok(g.clone()))?),
        // d(a-b) = (1, -1)
        BinaryOp::Sub => (opt(w0, &|| Ok(g.clone()))?, opt(w1, &|| e.neg(g))?),
        // d(ab) = (b, a)
        BinaryOp::Mul => (opt(w0, &|| e.mul(g, x1))?, opt(w1, &|| e.mul(g, x0))?),
        // d(a/b) = (1/b, -a/b^2 = -y/b)
        BinaryOp::Div => (
            opt(w0, &|| e.div(g, x1))?,
            opt(w1, &|| e.neg(&e.div(&e.mul(g, y)?, x1)?))?,
        ),
        // d(a^b) = (b a^(b-1), a^b ln a)
        BinaryOp::Pow => (
            opt(w0, &|| {
                let bm1 = e.add_scalar(x1, -1.0)?;
                e.mul(&e.mul(g, x1)?, &e.binary(BinaryOp::Pow, x0, &bm1)?)
            })?,
            opt(w1, &|| e.mul(&e.mul(g, y)?, &e.log(x0)?))?,
        ),
        // d max(a,b): to the larger; ties split in half (as PyTorch)
        BinaryOp::Maximum | BinaryOp::Minimum => {
            let (gt_ab, gt_ba) = if b == BinaryOp::Maximum {
                (BinaryOp::Gt, BinaryOp::Lt)
            } else {
                (BinaryOp::Lt, BinaryOp::Gt)
            };
            let half_tie =
                || -> Result<E::Value> { e.mul_scalar(&mask_of(e, &e.eq(x0, x1)?, g)?, 0.5) };
            (
                opt(w0, &|| {
                    let m = e.add(&mask_of(e, &e.binary(gt_ab, x0, x1)?, g)?, &half_tie()?)?;
                    e.mul(g, &m)
                })?,
                opt(w1, &|| {
                    let m = e.add(&mask_of(e, &e.binary(gt_ba, x0, x1)?, g)?, &half_tie()?)?;
                    e.mul(g, &m)
                })?,
            )
        }
        _ => (None, None),
    })
}

fn scalar_rule<E: Emit + ?Sized>(
    e: &E,
    b: BinaryOp,
    v: f64,
    left: bool,
    x: &E::Value,
    y: &E::Value,
    g: &E::Value,
) -> Result<E::Value> {
    match (b, left) {
        // d(x+v) = 1
        (BinaryOp::Add, _) => Ok(g.clone()),
        // d(x-v) = 1, d(v-x) = -1
        (BinaryOp::Sub, false) => Ok(g.clone()),
        (BinaryOp::Sub, true) => e.neg(g),
        // d(xv) = v
        (BinaryOp::Mul, _) => e.mul_scalar(g, v),
        // d(x/v) = 1/v, d(v/x) = -v/x^2 = -y/x
        (BinaryOp::Div, false) => e.mul_scalar(g, 1.0 / v),
        (BinaryOp::Div, true) => e.neg(&e.div(&e.mul(g, y)?, x)?),
        // d x^v = v x^(v-1)
        (BinaryOp::Pow, false) => {
            if v == 0.0 {
                e.zeros_like(g)
            } else if v == 1.0 {
                Ok(g.clone())
            } else if v == 2.0 {
                e.mul(g, &e.mul_scalar(x, 2.0)?)
            } else {
                e.mul(g, &e.mul_scalar(&e.pow_scalar(x, v - 1.0)?, v)?)
            }
        }
        // d v^x = v^x ln v
        (BinaryOp::Pow, true) => e.mul_scalar(&e.mul(g, y)?, v.ln()),
        // clamp_min / clamp_max: gradient where the bound is not active (inclusive, as PyTorch)
        (BinaryOp::Maximum, _) => e.mul(g, &mask_of(e, &e.scalar(BinaryOp::Ge, x, v, false)?, g)?),
        (BinaryOp::Minimum, _) => e.mul(g, &mask_of(e, &e.scalar(BinaryOp::Le, x, v, false)?, g)?),
        _ => e.zeros_like(g),
    }
}

fn reduce_rule<E: Emit + ?Sized>(
    e: &E,
    r: ReduceOp,
    axes: &[usize],
    keepdim: bool,
    x: &E::Value,
    y: &E::Value,
    g: &E::Value,
) -> Result<E::Value> {
    // Put the reduced axes back as size-1 dims so the gradient broadcasts against x.
    let restore = |v: &E::Value| -> Result<E::Value> {
        if keepdim {
            return Ok(v.clone());
        }
        let mut v = v.clone();
        for &a in axes {
            v = e.emit(Op::Unsqueeze(a), &[&v])?;
        }
        Ok(v)
    };
    let gk = restore(g)?;
    match r {
        // d sum = 1 everywhere
        ReduceOp::Sum => e.expand_like(&gk, x),
        // d mean = 1/n
        ReduceOp::Mean => {
            let n = e.dim_size(x, axes, e.dtype(g))?;
            e.div(&e.expand_like(&gk, x)?, &n)
        }
        // d max = indicator of the max, split evenly among ties
        ReduceOp::Max | ReduceOp::Min => {
            let yk = restore(y)?;
            let hit = mask_of(e, &e.eq(x, &e.expand_like(&yk, x)?)?, g)?;
            let count = e.sum(
                &hit,
                &axes.iter().map(|&a| a as isize).collect::<Vec<_>>(),
                true,
            )?;
            e.mul(&hit, &e.expand_like(&e.div(&gk, &count)?, x)?)
        }
        // d prod = prod / x
        ReduceOp::Prod => {
            let yk = restore(y)?;
            e.div(&e.mul(&e.expand_like(&gk, x)?, &e.expand_like(&yk, x)?)?, x)
        }
    }
}

fn cross_entropy_grad<E: Emit + ?Sized>(
    e: &E,
    logits: &E::Value,
    target: &E::Value,
    g: &E::Value,
    ignore_index: i64,
    eps: f64,
) -> Result<E::Value> {
    let rank = e.rank(logits);
    let class_axis = if rank == 1 { 0 } else { 1 };
    let c = e
        .dim(logits, class_axis)
        .ok_or_else(|| Error::invalid("cross_entropy", "the number of classes must be known"))?;
    let dtype = e.dtype(logits);
    let valid = e.scalar(BinaryOp::Ne, target, ignore_index as f64, false)?;
    let zero_t = e.zeros_like(target)?;
    let safe = e.where_(&valid, target, &zero_t)?;
    let on = 1.0 - eps + eps / c as f64;
    let off = eps / c as f64;
    let mut q = e.emit(
        Op::OneHot {
            depth: c,
            on,
            off,
            dtype,
        },
        &[&safe],
    )?;
    if rank > 2 {
        // one_hot puts classes last: move them to axis 1.
        let mut perm: Vec<isize> = vec![0, (rank - 1) as isize];
        perm.extend((1..rank - 1).map(|a| a as isize));
        q = e.permute(&q, &perm)?;
    }
    let p = e.softmax(logits, class_axis as isize)?;
    let gv = e.mul(g, &mask_of(e, &valid, g)?)?;
    let gv = if rank == 1 { gv } else { e.unsqueeze(&gv, 1)? };
    e.mul(&e.sub(&p, &q)?, &gv)
}
