//! `Pad` in every mode: constant padding is the IR's `Pad`; reflect, edge and wrap padding
//! pick source indices computed at import time (`IndexSelect` per padded axis).

use super::node::{check_created, const_ints, const_tensor, one, opt, req, Args, NodeCtx, Outs};
use tandem_ir::{Emit, EmitExt, Op};
use tandem_tensor::{Result, Tensor};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Pad" => pad(ctx, f, args),
        _ => return None,
    })
}

fn pad<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let mode = ctx.string("mode")?.unwrap_or_else(|| "constant".into());
    if !matches!(mode.as_str(), "constant" | "reflect" | "edge" | "wrap") {
        return Err(ctx.err(format!(
            "attribute mode '{mode}' is not supported (constant, reflect, edge or wrap)"
        )));
    }
    let (pads, value) = if ctx.opset < 11 {
        let p = ctx
            .ints("pads")?
            .ok_or_else(|| ctx.err("pads are required"))?;
        (p, ctx.float("value", 0.0)? as f64)
    } else {
        if opt(args, 3).is_some() {
            return Err(ctx.err("the axes input is not supported"));
        }
        let p = const_ints(ctx, req(ctx, args, 1)?, "pads")?;
        let v = match opt(args, 2) {
            Some(a) => const_tensor(a)
                .ok_or_else(|| ctx.err("constant_value must be known at import time"))?
                .item()?,
            None => 0.0,
        };
        (p, v)
    };
    let r = f.rank(x);
    if pads.len() != 2 * r {
        return Err(ctx.err(format!("pads {pads:?} do not match rank {r}")));
    }
    let mut pp = Vec::with_capacity(r);
    let mut dims = f.shape(x);
    for i in 0..r {
        let (b, e) = (pads[i], pads[i + r]);
        if !(0..=1 << 24).contains(&b) || !(0..=1 << 24).contains(&e) {
            return Err(ctx.err(format!("pads {pads:?} are negative or too large")));
        }
        pp.push((b as usize, e as usize));
        dims[i] = dims[i].map(|d| d + (b + e) as usize);
    }
    check_created(ctx, "result", &dims)?;
    if mode == "constant" {
        return one(f.emit(Op::Pad { pads: pp, value }, &[x])?);
    }
    // Reflect, edge and wrap padding pick source indices computed at import time.
    let mut y = x.clone();
    for (a, &(b, e)) in pp.iter().enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let d = f.dim(x, a).filter(|&d| d > 0).ok_or_else(|| {
            ctx.err(format!(
                "{mode} padding needs axis {a} to be known and non-empty"
            ))
        })?;
        let ids = pad_indices(ctx, &mode, d, b, e)?;
        let n = ids.len();
        let idx = f.constant(Tensor::from_vec(ids, &[n])?)?;
        y = f.index_select(&y, a as isize, &idx)?;
    }
    one(y)
}

/// Source indices of a `reflect` / `edge` / `wrap` padded axis of size `d`.
fn pad_indices(ctx: &NodeCtx<'_>, mode: &str, d: usize, b: usize, e: usize) -> Result<Vec<i64>> {
    let (d, b) = (d as i64, b as i64);
    if mode == "reflect" && (b >= d || e as i64 >= d) {
        return Err(ctx.err(format!(
            "reflect pads ({b}, {e}) must be smaller than the axis size {d}"
        )));
    }
    Ok((0..d + b + e as i64)
        .map(|p| {
            let src = p - b;
            match mode {
                "reflect" if src < 0 => -src,
                "reflect" if src >= d => 2 * (d - 1) - src,
                "wrap" => src.rem_euclid(d),
                _ => src.clamp(0, d - 1),
            }
        })
        .collect())
}
