//! Convolution, pooling and batch normalization over NCHW tensors.

use super::node::{check_created, one, opt, req, Args, NodeCtx, Outs};
use tandem_ir::{Emit, EmitExt, Functional, Op};
use tandem_tensor::{Conv2dParams, Pool2dParams, ReduceOp, Result};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Conv" => conv(ctx, f, args),
        "MaxPool" => pool(ctx, f, args, true),
        "AveragePool" => pool(ctx, f, args, false),
        "GlobalAveragePool" => global_pool(ctx, f, args, ReduceOp::Mean),
        "GlobalMaxPool" => global_pool(ctx, f, args, ReduceOp::Max),
        "BatchNormalization" => batch_norm(ctx, f, args),
        "LayerNormalization" => layer_norm(ctx, f, args),
        "InstanceNormalization" => instance_norm(ctx, f, args),
        _ => return None,
    })
}

/// Bound on kernel sizes, strides, dilations and pads read from a file.
pub(super) const LIMIT: i64 = 1 << 16;

/// A 2-D window attribute; a 1-D op (`nd == 1`) is lifted to 2-D with a height of 1.
pub(super) fn pair(ctx: &NodeCtx<'_>, name: &str, default: usize, nd: usize) -> Result<[usize; 2]> {
    let ok = |v: &i64| (0..=LIMIT).contains(v);
    match ctx.ints(name)? {
        None => Ok([default; 2]),
        Some(v) => match (nd, v.as_slice()) {
            (2, [a, b]) if ok(a) && ok(b) => Ok([*a as usize, *b as usize]),
            (1, [a]) if ok(a) => Ok([1, *a as usize]),
            _ => Err(ctx.err(format!(
                "{name} {v:?} must hold {nd} value(s) in 0..={LIMIT} (1-D and 2-D ops only)"
            ))),
        },
    }
}

/// `(begin, end)` padding of the two spatial dims from the `pads` attribute (none: no
/// padding), for `nd` (1 or 2) spatial dims lifted to two.
pub(super) fn explicit_pads(ctx: &NodeCtx<'_>, nd: usize) -> Result<[(usize, usize); 2]> {
    match ctx.ints("pads")? {
        None => Ok([(0, 0); 2]),
        Some(p) => match p.as_slice() {
            [hb, wb, he, we] if nd == 2 && p.iter().all(|v| (0..=LIMIT).contains(v)) => {
                Ok([(*hb as usize, *he as usize), (*wb as usize, *we as usize)])
            }
            [b, e] if nd == 1 && p.iter().all(|v| (0..=LIMIT).contains(v)) => {
                Ok([(0, 0), (*b as usize, *e as usize)])
            }
            _ => Err(ctx.err(format!(
                "attribute pads {p:?} must hold {} values in 0..={LIMIT}",
                2 * nd
            ))),
        },
    }
}

/// `(begin, end)` padding of the two spatial dims from `pads` / `auto_pad`.
fn spatial_pads(
    ctx: &NodeCtx<'_>,
    input: [Option<usize>; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    nd: usize,
) -> Result<[(usize, usize); 2]> {
    let auto = ctx.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" => explicit_pads(ctx, nd),
        "VALID" => Ok([(0, 0); 2]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut out = [(0, 0); 2];
            for i in 0..2 {
                let n = input[i].ok_or_else(|| {
                    ctx.err(format!(
                        "auto_pad {auto} needs the spatial size to be known"
                    ))
                })?;
                let s = stride[i].max(1);
                let eff = dilation[i] * (kernel[i].max(1) - 1) + 1;
                let total = ((n.div_ceil(s)).saturating_sub(1) * s + eff).saturating_sub(n);
                let small = total / 2;
                out[i] = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            Ok(out)
        }
        other => Err(ctx.err(format!("unknown auto_pad '{other}'"))),
    }
}

/// Checks the padded input and the output of a window op against the allocation bound
/// before anything is computed (pads and strides come from the file).
fn check_geometry<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    x: &F::Value,
    pads: [(usize, usize); 2],
    out_channels: Option<usize>,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<()> {
    let mut padded = f.shape(x);
    let mut out = padded.clone();
    for i in 0..2 {
        padded[i + 2] = padded[i + 2].map(|d| d + pads[i].0 + pads[i].1);
        let eff = dilation[i] * (kernel[i].max(1) - 1) + 1;
        out[i + 2] = padded[i + 2].map(|p| p.saturating_sub(eff) / stride[i].max(1) + 2);
    }
    if out_channels.is_some() {
        out[1] = out_channels;
    }
    check_created(ctx, "padded input", &padded)?;
    check_created(ctx, "output", &out)
}

/// The number of spatial dims of an `[N, C, ...]` input (1 or 2) and the input lifted to
/// 4-D (1-D inputs get a height of 1 at axis 2).
pub(super) fn lift<F: Emit>(ctx: &NodeCtx<'_>, f: &F, x: &F::Value) -> Result<(usize, F::Value)> {
    match f.rank(x) {
        4 => Ok((2, x.clone())),
        3 => Ok((1, f.unsqueeze(x, 2)?)),
        r => Err(ctx.err(format!(
            "only 1-D and 2-D (rank 3 or 4, NCW / NCHW) inputs are supported, got rank {r}"
        ))),
    }
}

/// Undoes [`lift`] on a result.
pub(super) fn unlift<F: Emit>(f: &F, y: F::Value, nd: usize) -> Result<F::Value> {
    if nd == 1 {
        f.squeeze(&y, 2)
    } else {
        Ok(y)
    }
}

/// Applies asymmetric padding explicitly; returns the input and the symmetric remainder.
fn pad_explicit<F: Emit>(
    f: &F,
    x: &F::Value,
    pads: [(usize, usize); 2],
    value: f64,
) -> Result<(F::Value, [usize; 2])> {
    if pads[0].0 == pads[0].1 && pads[1].0 == pads[1].1 {
        return Ok((x.clone(), [pads[0].0, pads[1].0]));
    }
    let y = f.emit(
        Op::Pad {
            pads: vec![(0, 0), (0, 0), pads[0], pads[1]],
            value,
        },
        &[x],
    )?;
    Ok((y, [0, 0]))
}

fn conv<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let (nd, x) = lift(ctx, f, &req(ctx, args, 0)?.value)?;
    let (wnd, w) = lift(ctx, f, &req(ctx, args, 1)?.value)?;
    if wnd != nd {
        return Err(ctx.err("input and weight ranks differ"));
    }
    let (x, w) = (&x, &w);
    let kernel = match (f.dim(w, 2), f.dim(w, 3)) {
        (Some(a), Some(b)) => [a, b],
        _ => pair(ctx, "kernel_shape", 0, nd)?,
    };
    let stride = pair(ctx, "strides", 1, nd)?;
    let dilation = pair(ctx, "dilations", 1, nd)?;
    let groups = ctx.int("group", 1)?;
    if groups < 1 {
        return Err(ctx.err(format!("group {groups} must be positive")));
    }
    let pads = spatial_pads(
        ctx,
        [f.dim(x, 2), f.dim(x, 3)],
        kernel,
        stride,
        dilation,
        nd,
    )?;
    check_geometry(ctx, f, x, pads, f.dim(w, 0), kernel, stride, dilation)?;
    let (x, padding) = pad_explicit(f, x, pads, 0.0)?;
    let p = Conv2dParams {
        stride,
        padding,
        dilation,
        groups: groups as usize,
    };
    let b = opt(args, 2).map(|a| &a.value);
    one(unlift(f, f.conv2d(&x, w, b, p)?, nd)?)
}

fn pool<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    max: bool,
) -> Result<Outs<F::Value>> {
    let (nd, x) = lift(ctx, f, &req(ctx, args, 0)?.value)?;
    let x = &x;
    let kernel = match ctx.ints("kernel_shape")? {
        Some(_) => pair(ctx, "kernel_shape", 1, nd)?,
        None => return Err(ctx.err("kernel_shape is required")),
    };
    let stride = pair(ctx, "strides", 1, nd)?;
    let dilation = pair(ctx, "dilations", 1, nd)?;
    let ceil_mode = ctx.int("ceil_mode", 0)? != 0;
    let include_pad = ctx.int("count_include_pad", 0)? != 0;
    if !max && dilation != [1, 1] {
        return Err(ctx.err("dilated average pooling is not supported"));
    }
    let pads = spatial_pads(
        ctx,
        [f.dim(x, 2), f.dim(x, 3)],
        kernel,
        stride,
        dilation,
        nd,
    )?;
    let symmetric = pads[0].0 == pads[0].1 && pads[1].0 == pads[1].1;
    if !max && !symmetric && !include_pad {
        return Err(ctx.err(format!(
            "asymmetric pads {pads:?} with count_include_pad = 0 are not supported"
        )));
    }
    check_geometry(ctx, f, x, pads, None, kernel, stride, dilation)?;
    let fill = if max { f64::NEG_INFINITY } else { 0.0 };
    let (x, padding) = pad_explicit(f, x, pads, fill)?;
    let p = Pool2dParams {
        kernel,
        stride,
        padding,
        dilation,
        ceil_mode,
        count_include_pad: include_pad,
    };
    let y = if max {
        f.max_pool2d(&x, p)?
    } else {
        f.avg_pool2d(&x, p)?
    };
    one(unlift(f, y, nd)?)
}

fn global_pool<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    op: ReduceOp,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    if r < 3 {
        return Err(ctx.err(format!("input must be [N, C, ...], got rank {r}")));
    }
    let axes: Vec<isize> = (2..r as isize).collect();
    one(f.reduce(op, x, &axes, true)?)
}

fn batch_norm<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    if ctx.int("training_mode", 0)? != 0 {
        return Err(ctx.err("training_mode = 1 is not supported (inference only)"));
    }
    let eps = ctx.float("epsilon", 1e-5)? as f64;
    let x = &req(ctx, args, 0)?.value;
    let scale = &req(ctx, args, 1)?.value;
    let bias = &req(ctx, args, 2)?.value;
    let mean = &req(ctx, args, 3)?.value;
    let var = &req(ctx, args, 4)?.value;
    let y = f.batch_norm(
        x,
        Some(mean),
        Some(var),
        Some(scale),
        Some(bias),
        false,
        0.0,
        eps,
    )?;
    one(y.output)
}

fn layer_norm<F: Emit>(ctx: &NodeCtx<'_>, f: &F, args: &Args<F::Value>) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    let a = super::node::axis(ctx, ctx.int("axis", -1)?, r)?;
    let eps = ctx.float("epsilon", 1e-5)? as f64;
    let scale = &req(ctx, args, 1)?.value;
    let bias = opt(args, 2).map(|b| &b.value);
    one(f.layer_norm(x, r - a, Some(scale), bias, eps)?)
}

fn instance_norm<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let r = f.rank(x);
    if r < 3 {
        return Err(ctx.err(format!("input must be [N, C, ...], got rank {r}")));
    }
    let eps = ctx.float("epsilon", 1e-5)? as f64;
    let axes: Vec<isize> = (2..r as isize).collect();
    let mean = f.mean(x, &axes, true)?;
    let xc = f.sub(x, &mean)?;
    let var = f.mean(&f.square(&xc)?, &axes, true)?;
    let y = f.mul(&xc, &f.rsqrt(&f.add_scalar(&var, eps)?)?)?;
    let mut per_channel = vec![1isize; r];
    per_channel[1] = -1;
    let scale = f.reshape(&req(ctx, args, 1)?.value, &per_channel)?;
    let bias = f.reshape(&req(ctx, args, 2)?.value, &per_channel)?;
    one(f.add(&f.mul(&y, &scale)?, &bias)?)
}
