//! `ConvTranspose` (1-D and 2-D) as the input gradient of the matching convolution.
//!
//! A transposed convolution of `x` with weight `W` (`[C_in, C_out / group, kh, kw]`) is the
//! gradient of `conv2d(y, W)` with respect to `y`, evaluated at the gradient `x`: exactly
//! [`Op::Conv2dInputGrad`] with inputs `[x, W, y_like]`, where `y_like` only gives the output
//! shape. Symmetric padding goes into the convolution parameters; asymmetric padding (and the
//! negative padding implied by some `output_shape` values) is applied afterwards by slicing or
//! zero-padding the result.

use super::node::{check_created, opt, req, Args, NodeCtx, Outs};
use super::ops_nn::{explicit_pads, lift, pair, unlift, LIMIT};
use tandem_ir::{Emit, EmitExt, Op};
use tandem_tensor::{Conv2dParams, Result};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "ConvTranspose" => conv_transpose(ctx, f, args),
        _ => return None,
    })
}

/// `(begin, end)` cropping of the full transposed-convolution output along each spatial
/// axis; negative values grow the output with zeros.
fn crops(
    ctx: &NodeCtx<'_>,
    input: [usize; 2],
    full: [i64; 2],
    stride: [usize; 2],
    nd: usize,
) -> Result<[(i64, i64); 2]> {
    let auto = ctx.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let split = |total: i64, upper: bool| {
        let half = total / 2;
        if upper {
            (half, total - half)
        } else {
            (total - half, half)
        }
    };
    if let Some(os) = ctx.ints("output_shape")? {
        // The spatial sizes; some exporters write the whole shape [N, C, ...].
        let spatial = match os.len() {
            n if n == nd => os.clone(),
            n if n == nd + 2 => os[2..].to_vec(),
            _ => {
                return Err(ctx.err(format!(
                    "attribute output_shape {os:?} must hold {nd} spatial size(s)"
                )))
            }
        };
        let mut out = [(0, 0); 2];
        for (k, &o) in spatial.iter().enumerate() {
            if !(1..=LIMIT * LIMIT).contains(&o) {
                return Err(ctx.err(format!("attribute output_shape {os:?} is out of range")));
            }
            // Spatial axis k of the op is axis k + (2 - nd) of the lifted 2-D geometry.
            let i = k + 2 - nd;
            out[i] = split(full[i] - o, auto == "SAME_UPPER");
        }
        return Ok(out);
    }
    match auto.as_str() {
        "NOTSET" => {
            let p = explicit_pads(ctx, nd)?;
            Ok(p.map(|(b, e)| (b as i64, e as i64)))
        }
        "VALID" => Ok([(0, 0); 2]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [(0, 0); 2];
            for i in 0..2 {
                let want = (input[i] * stride[i]) as i64;
                out[i] = split(full[i] - want, auto == "SAME_UPPER");
            }
            Ok(out)
        }
        other => Err(ctx.err(format!("attribute auto_pad has unknown value '{other}'"))),
    }
}

fn conv_transpose<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let (nd, x) = lift(ctx, f, &req(ctx, args, 0)?.value)?;
    let (wnd, w) = lift(ctx, f, &req(ctx, args, 1)?.value)?;
    if wnd != nd {
        return Err(ctx.err("input and weight ranks differ"));
    }
    let group = ctx.int("group", 1)?;
    if !(1..=LIMIT).contains(&group) {
        return Err(ctx.err(format!("attribute group {group} must be in 1..={LIMIT}")));
    }
    let group = group as usize;
    let wd = f.shape(&w);
    let (cin, per_group, kernel) = match wd.as_slice() {
        [Some(c), Some(g), Some(kh), Some(kw)] => (*c, *g, [*kh, *kw]),
        _ => return Err(ctx.err("the weight's shape must be known when the model is imported")),
    };
    if let Some(xc) = f.dim(&x, 1) {
        if xc != cin {
            return Err(ctx.err(format!(
                "input has {xc} channels but the weight expects {cin}"
            )));
        }
    }
    if ctx.has("kernel_shape") {
        let k = pair(ctx, "kernel_shape", 0, nd)?;
        if k != kernel {
            return Err(ctx.err(format!(
                "attribute kernel_shape {k:?} does not match the weight's kernel {kernel:?}"
            )));
        }
    }
    let stride = pair(ctx, "strides", 1, nd)?;
    let dilation = pair(ctx, "dilations", 1, nd)?;
    let mut out_pad = pair(ctx, "output_padding", 0, nd)?;
    if nd == 1 {
        // The lifted height axis has no output padding.
        out_pad[0] = 0;
    }
    for (name, v) in [("strides", stride), ("dilations", dilation)] {
        if v.contains(&0) {
            return Err(ctx.err(format!("attribute {name} {v:?} must be positive")));
        }
    }
    let input = match (f.dim(&x, 2), f.dim(&x, 3)) {
        (Some(h), Some(w)) => [h, w],
        _ => {
            return Err(
                ctx.err("the spatial size of the input must be known when the model is imported")
            )
        }
    };
    let mut full = [0i64; 2];
    for i in 0..2 {
        if out_pad[i] >= stride[i] && out_pad[i] > 0 {
            return Err(ctx.err(format!(
                "attribute output_padding {out_pad:?} must be smaller than the strides {stride:?}"
            )));
        }
        let eff = dilation[i] * (kernel[i].max(1) - 1) + 1;
        full[i] = (stride[i] * input[i].saturating_sub(1) + eff + out_pad[i]) as i64;
    }
    let crop = crops(ctx, input, full, stride, nd)?;
    // Symmetric part of the cropping as convolution padding; the rest applied afterwards.
    let mut padding = [0usize; 2];
    let mut like_size = [0usize; 2];
    let mut rest = [(0i64, 0i64); 2];
    for i in 0..2 {
        let (b, e) = crop[i];
        if full[i] - b - e < 1 {
            return Err(ctx.err(format!(
                "the padding {crop:?} leaves no output (full size {full:?})"
            )));
        }
        let p = b.min(e).max(0);
        padding[i] = p as usize;
        like_size[i] = (full[i] - 2 * p) as usize;
        rest[i] = (b - p, e - p);
    }
    let cout = per_group * group;
    let batch = f.dim(&x, 0);
    check_created(
        ctx,
        "output",
        &[batch, Some(cout), Some(like_size[0]), Some(like_size[1])],
    )?;
    let dtype = f.dtype(&x);
    let like = match batch {
        Some(n) => f.full(&[n, cout, like_size[0], like_size[1]], 0.0, dtype)?,
        None => {
            // The batch is known only at run time: [N, 1, 1, 1] zeros broadcast against
            // [1, C_out, H, W] zeros give the shape.
            let mut corner = x.clone();
            for a in 1..4 {
                corner = f.slice(&corner, a, 0, 1, 1)?;
            }
            let n = f.full_like(&corner, 0.0, None)?;
            let rest = f.full(&[1, cout, like_size[0], like_size[1]], 0.0, dtype)?;
            f.add(&n, &rest)?
        }
    };
    let p = Conv2dParams {
        stride,
        padding,
        dilation,
        groups: group,
    };
    let mut y = f.emit(Op::Conv2dInputGrad(p), &[&x, &w, &like])?;
    for (i, &(b, e)) in rest.iter().enumerate() {
        let a = i + 2;
        if b > 0 || e > 0 {
            let end = like_size[i] as isize - e.max(0) as isize;
            y = f.slice(&y, a as isize, b.max(0) as isize, end, 1)?;
        }
        if b < 0 || e < 0 {
            let mut pads = vec![(0usize, 0usize); 4];
            pads[a] = ((-b).max(0) as usize, (-e).max(0) as usize);
            y = f.emit(Op::Pad { pads, value: 0.0 }, &[&y])?;
        }
    }
    if let Some(b) = opt(args, 2) {
        let b = f.reshape(&b.value, &[1, -1, 1, 1])?;
        y = f.add(&y, &b)?;
    }
    Ok(vec![(unlift(f, y, nd)?, None)])
}
