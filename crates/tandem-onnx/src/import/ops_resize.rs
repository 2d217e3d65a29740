//! Spatial resampling and rearrangement: `Resize` (opset 10+), `Upsample` (opset 7-9),
//! `DepthToSpace` and `SpaceToDepth`.
//!
//! Resizing is separable: every resized axis is handled on its own with index tensors computed
//! when the model is imported (`IndexSelect` along the axis) and, for linear mode, the two-tap
//! weights as constants (`y = x[i0] * w0 + x[i1] * w1`). The sizes of the resized axes must
//! therefore be known at import time; other axes (the batch) may be dynamic.

use super::node::{
    check_created, const_tensor, known_dims, opt, req, Arg, Args, NodeCtx, Outs, PDim,
};
use tandem_ir::{Emit, EmitExt};
use tandem_tensor::{Result, Tensor};

/// Maps `op` if it belongs to this family.
pub(super) fn apply<F: Emit>(
    op: &str,
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Option<Result<Outs<F::Value>>> {
    Some(match op {
        "Resize" => resize(ctx, f, args, false),
        "Upsample" => resize(ctx, f, args, true),
        "DepthToSpace" => depth_to_space(ctx, f, args),
        "SpaceToDepth" => space_to_depth(ctx, f, args),
        _ => return None,
    })
}

/// How an output coordinate maps back to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

/// How a fractional input coordinate picks a pixel in nearest mode.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Opset 10 `Resize` and `Upsample`: floor when enlarging, ceil when shrinking.
    Simple,
}

/// Interpolation mode.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest(Rounding),
    Linear,
    /// Keys cubic convolution with coefficient `a`; `exclude` drops (and renormalizes) taps
    /// outside the input instead of repeating the edge.
    Cubic {
        a: f64,
        exclude: bool,
    },
}

impl Coord {
    fn parse(ctx: &NodeCtx<'_>, s: &str) -> Result<Coord> {
        Ok(match s {
            "half_pixel" => Coord::HalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "align_corners" => Coord::AlignCorners,
            "asymmetric" => Coord::Asymmetric,
            "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
            other => {
                return Err(ctx.err(format!(
                    "attribute coordinate_transformation_mode '{other}' is not supported"
                )))
            }
        })
    }

    /// The input coordinate of output index `j` for an axis of `n_in` -> `n_out` at `scale`.
    /// Computed in f32 like ONNX Runtime, so that coordinates landing on a pixel boundary
    /// round the same way.
    fn source(self, j: usize, n_in: usize, n_out: usize, scale: f64) -> f64 {
        let (j, s) = (j as f32, scale as f32);
        let (fi, fo) = (n_in as f32, n_out as f32);
        let v = match self {
            Coord::HalfPixel => (j + 0.5) / s - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = fo / (s * fi);
                let center = fi / 2.0;
                center * (1.0 - adjustment) + (j + 0.5) / s - 0.5
            }
            Coord::PytorchHalfPixel if n_out > 1 => (j + 0.5) / s - 0.5,
            Coord::PytorchHalfPixel => 0.0,
            Coord::AlignCorners if n_out > 1 => j * (fi - 1.0) / (fo - 1.0),
            Coord::AlignCorners => 0.0,
            Coord::Asymmetric => j / s,
            Coord::TfHalfPixelForNn => (j + 0.5) / s,
        };
        f64::from(v)
    }
}

impl Rounding {
    fn parse(ctx: &NodeCtx<'_>, s: &str) -> Result<Rounding> {
        Ok(match s {
            "round_prefer_floor" => Rounding::RoundPreferFloor,
            "round_prefer_ceil" => Rounding::RoundPreferCeil,
            "floor" => Rounding::Floor,
            "ceil" => Rounding::Ceil,
            other => {
                return Err(ctx.err(format!("attribute nearest_mode '{other}' is not supported")))
            }
        })
    }

    fn pick(self, x: f64, scale: f64) -> f64 {
        let half = x - x.floor() == 0.5;
        match self {
            Rounding::RoundPreferFloor if half => x.floor(),
            Rounding::RoundPreferCeil if half => x.ceil(),
            Rounding::RoundPreferFloor | Rounding::RoundPreferCeil => x.round(),
            Rounding::Floor => x.floor(),
            Rounding::Ceil => x.ceil(),
            Rounding::Simple if scale < 1.0 => x.ceil(),
            Rounding::Simple => x.trunc(),
        }
    }
}

/// The mode, coordinate mapping and rounding of a `Resize` / `Upsample` node.
fn modes(ctx: &NodeCtx<'_>, legacy: bool) -> Result<(Mode, Coord)> {
    let modern = !legacy && ctx.opset >= 11;
    let mode = ctx.string("mode")?.unwrap_or_else(|| "nearest".into());
    let coord = if modern {
        let c = ctx
            .string("coordinate_transformation_mode")?
            .unwrap_or_else(|| "half_pixel".into());
        Coord::parse(ctx, &c)?
    } else {
        Coord::Asymmetric
    };
    let mode = match mode.as_str() {
        "nearest" if modern => {
            let r = ctx
                .string("nearest_mode")?
                .unwrap_or_else(|| "round_prefer_floor".into());
            Mode::Nearest(Rounding::parse(ctx, &r)?)
        }
        "nearest" => Mode::Nearest(Rounding::Simple),
        "linear" | "bilinear" => Mode::Linear,
        "cubic" if modern => Mode::Cubic {
            a: f64::from(ctx.float("cubic_coeff_a", -0.75)?),
            exclude: ctx.int("exclude_outside", 0)? != 0,
        },
        other => {
            return Err(ctx.err(format!(
                "attribute mode '{other}' is not supported (nearest, linear and, from opset \
                 11, cubic)"
            )))
        }
    };
    if modern {
        if mode == Mode::Linear && ctx.int("exclude_outside", 0)? != 0 {
            return Err(ctx.err("attribute exclude_outside = 1 is not supported"));
        }
        if ctx.int("antialias", 0)? != 0 {
            return Err(ctx.err("attribute antialias = 1 is not supported"));
        }
        let policy = ctx
            .string("keep_aspect_ratio_policy")?
            .unwrap_or_else(|| "stretch".into());
        if policy != "stretch" {
            return Err(ctx.err(format!(
                "attribute keep_aspect_ratio_policy '{policy}' is not supported (stretch only)"
            )));
        }
    }
    Ok((mode, coord))
}

/// A float vector input (scales), `None` when absent or empty.
fn float_input<V>(ctx: &NodeCtx<'_>, arg: Option<&Arg<V>>, what: &str) -> Result<Option<Vec<f64>>> {
    let Some(a) = arg else { return Ok(None) };
    let t = const_tensor(a).ok_or_else(|| {
        ctx.err(format!(
            "{what} must be known when the model is imported (a constant or an initializer)"
        ))
    })?;
    if t.numel() == 0 {
        return Ok(None);
    }
    Ok(Some(t.to_f64_vec()?))
}

/// Longest resized axis (its index and weight tables are built at import time).
const MAX_AXIS: usize = 1 << 22;

/// A `sizes` entry that is the input's own size, known only at run time (the batch in
/// `Shape(x)[:2]` concatenated with constant spatial sizes, as PyTorch exports it).
const KEEP: i64 = i64::MIN;

/// The `sizes` input: known entries, and [`KEEP`] for run-time dims of the resized input
/// itself at the same axis.
fn sizes_input<V>(ctx: &NodeCtx<'_>, arg: &Arg<V>) -> Result<Vec<i64>> {
    let data = ctx.proto.input.first().cloned().unwrap_or_default();
    known_dims(ctx, arg, "sizes")?
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d {
            PDim::Val(v) => Ok(v),
            PDim::Dim(of, a) if of == data && a == i => Ok(KEEP),
            PDim::Dim(of, a) => Err(ctx.err(format!(
                "sizes entry {i} is dim {a} of '{of}', only known at run time"
            ))),
            PDim::Unknown => Err(ctx.err(format!("sizes entry {i} is only known at run time"))),
        })
        .collect()
}

/// Per axis of the input: `(output size, scale)`; the scale is the given one, or
/// `out / in` when sizes are given.
fn targets<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    x: &F::Value,
    legacy: bool,
) -> Result<Vec<(Option<usize>, f64)>> {
    let dims = f.shape(x);
    let r = dims.len();
    let (scales, sizes) = if legacy && ctx.opset < 9 {
        let s = ctx
            .floats("scales")?
            .ok_or_else(|| ctx.err("attribute scales is required"))?;
        (Some(s.into_iter().map(f64::from).collect()), None)
    } else if legacy || ctx.opset < 11 {
        let s = float_input(ctx, Some(req(ctx, args, 1)?), "scales")?;
        (
            Some(s.ok_or_else(|| ctx.err("scales must not be empty"))?),
            None,
        )
    } else {
        let scales = float_input(ctx, opt(args, 2), "scales")?;
        let sizes = match opt(args, 3) {
            Some(a) => Some(sizes_input(ctx, a)?).filter(|v| !v.is_empty()),
            None => None,
        };
        (scales, sizes)
    };
    // Opset 18: the scales or sizes may name a subset of the axes.
    let axes: Vec<usize> = match ctx.ints("axes")? {
        Some(a) if !legacy && ctx.opset >= 18 => a
            .iter()
            .map(|&v| super::node::axis(ctx, v, r))
            .collect::<Result<_>>()?,
        _ => (0..r).collect(),
    };
    let mut out: Vec<(Option<usize>, f64)> = dims.iter().map(|&d| (d, 1.0)).collect();
    match (scales, sizes) {
        (_, Some(sizes)) => {
            if sizes.len() != axes.len() {
                return Err(ctx.err(format!(
                    "sizes {sizes:?} do not match the {} resized axes",
                    axes.len()
                )));
            }
            for (&a, &s) in axes.iter().zip(&sizes) {
                if s == KEEP {
                    continue;
                }
                let s = usize::try_from(s)
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| ctx.err(format!("sizes {sizes:?} must be positive")))?;
                if dims[a] == Some(s) {
                    continue;
                }
                let n = dims[a].ok_or_else(|| {
                    ctx.err(format!("axis {a} is resized but its size is not known"))
                })?;
                out[a] = (Some(s), f64::from(s as f32 / n as f32));
            }
        }
        (Some(scales), None) => {
            if scales.len() != axes.len() {
                return Err(ctx.err(format!(
                    "scales {scales:?} do not match the {} resized axes",
                    axes.len()
                )));
            }
            for (&a, &s) in axes.iter().zip(&scales) {
                if !(s.is_finite() && s > 0.0 && s < 1e6) {
                    return Err(ctx.err(format!("scales {scales:?} must be positive")));
                }
                if s == 1.0 {
                    continue;
                }
                let n = dims[a].ok_or_else(|| {
                    ctx.err(format!("axis {a} is resized but its size is not known"))
                })?;
                // f32 product, like ONNX Runtime.
                let o = (n as f32 * s as f32).floor() as usize;
                if o == 0 {
                    return Err(ctx.err(format!("scale {s} leaves axis {a} empty")));
                }
                out[a] = (Some(o), s);
            }
        }
        (None, None) => return Err(ctx.err("needs scales or sizes")),
    }
    Ok(out)
}

fn resize<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
    legacy: bool,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let (mode, coord) = modes(ctx, legacy)?;
    let plan = targets(ctx, f, args, x, legacy)?;
    let dims: Vec<Option<usize>> = plan.iter().map(|p| p.0).collect();
    check_created(ctx, "output", &dims)?;
    let dtype = f.dtype(x);
    if !matches!(mode, Mode::Nearest(_)) && !dtype.is_float() {
        return Err(ctx.err(format!(
            "linear and cubic modes need a float input, got {dtype:?}"
        )));
    }
    let r = plan.len();
    let mut y = x.clone();
    for (a, &(n_out, scale)) in plan.iter().enumerate() {
        let (Some(n_in), Some(n_out)) = (f.dim(x, a), n_out) else {
            continue;
        };
        if scale == 1.0 && n_in == n_out {
            continue;
        }
        if n_in == 0 {
            return Err(ctx.err(format!("axis {a} is empty and cannot be resized")));
        }
        if n_out > MAX_AXIS {
            return Err(ctx.err(format!(
                "axis {a} would be resized to {n_out} (limit {MAX_AXIS})"
            )));
        }
        // Weights shaped [n_out, 1, ...] so that they broadcast along the resized axis.
        let mut wshape = vec![1usize; r - a];
        wshape[0] = n_out;
        let mut acc: Option<F::Value> = None;
        let mut taps = taps(mode, coord, n_in, n_out, scale);
        if taps.len() > 1 {
            // Taps that never contribute (integer source coordinates in linear mode).
            taps.retain(|(_, ws)| ws.iter().any(|&w| w != 0.0));
        }
        for (ids, ws) in taps {
            let idx = f.constant(Tensor::from_vec(ids, &[n_out])?)?;
            let picked = f.index_select(&y, a as isize, &idx)?;
            let term = if ws.iter().all(|&w| w == 1.0) {
                picked
            } else {
                let w = f.constant(Tensor::from_vec(ws, &wshape)?.cast(dtype)?)?;
                f.mul(&picked, &w)?
            };
            acc = Some(match acc {
                Some(prev) => f.add(&prev, &term)?,
                None => term,
            });
        }
        if let Some(v) = acc {
            y = v;
        }
    }
    Ok(vec![(y, None)])
}

/// Keys cubic convolution weights of the four taps around a fractional offset `t` in [0, 1).
fn cubic_weights(t: f64, a: f64) -> [f64; 4] {
    let far = |d: f64| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
    let near = |d: f64| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// The taps of one resized axis: per tap, the source index and weight of every output
/// position. Nearest mode has one tap (weight 1), linear two, cubic four.
fn taps(
    mode: Mode,
    coord: Coord,
    n_in: usize,
    n_out: usize,
    scale: f64,
) -> Vec<(Vec<i64>, Vec<f64>)> {
    let k = match mode {
        Mode::Nearest(_) => 1,
        Mode::Linear => 2,
        Mode::Cubic { .. } => 4,
    };
    let mut out = vec![(Vec::with_capacity(n_out), Vec::with_capacity(n_out)); k];
    let last = (n_in - 1) as f64;
    for j in 0..n_out {
        let src = coord.source(j, n_in, n_out, scale);
        let mut put = |tap: usize, i: f64, w: f64| {
            if let Some((ids, ws)) = out.get_mut(tap) {
                ids.push(i.clamp(0.0, last) as i64);
                ws.push(w);
            }
        };
        match mode {
            Mode::Nearest(rounding) => put(0, rounding.pick(src, scale), 1.0),
            Mode::Linear => {
                let s = src.clamp(0.0, last);
                let lo = s.floor();
                put(0, lo, 1.0 - (s - lo));
                put(1, (lo + 1.0).min(last), s - lo);
            }
            Mode::Cubic { a, exclude } => {
                let lo = src.floor();
                let mut w = cubic_weights(src - lo, a);
                let pos = [lo - 1.0, lo, lo + 1.0, lo + 2.0];
                if exclude {
                    for (wi, p) in w.iter_mut().zip(pos) {
                        if p < 0.0 || p > last {
                            *wi = 0.0;
                        }
                    }
                    let total: f64 = w.iter().sum();
                    if total != 0.0 {
                        w.iter_mut().for_each(|v| *v /= total);
                    }
                }
                for (t, (p, wi)) in pos.into_iter().zip(w).enumerate() {
                    put(t, p, wi);
                }
            }
        }
    }
    out
}

/// The block size and the `[N, C, H, W]` dims (`N` may be dynamic) of a depth/space node.
fn block_geometry<F: Emit>(ctx: &NodeCtx<'_>, f: &F, x: &F::Value) -> Result<(usize, [isize; 3])> {
    let b = ctx.int("blocksize", 0)?;
    if !(1..=1 << 12).contains(&b) {
        return Err(ctx.err(format!("attribute blocksize {b} must be in 1..=4096")));
    }
    match f.shape(x).as_slice() {
        [_, Some(c), Some(h), Some(w)] => Ok((b as usize, [*c as isize, *h as isize, *w as isize])),
        [_, _, _, _] => {
            Err(ctx.err("the channel and spatial sizes must be known when the model is imported"))
        }
        d => Err(ctx.err(format!("input must be [N, C, H, W], got rank {}", d.len()))),
    }
}

fn depth_to_space<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let (b, [c, h, w]) = block_geometry(ctx, f, x)?;
    let bi = b as isize;
    if c % (bi * bi) != 0 {
        return Err(ctx.err(format!(
            "{c} channels are not divisible by blocksize^2 = {}",
            b * b
        )));
    }
    let cc = c / (bi * bi);
    let mode = ctx.string("mode")?.unwrap_or_else(|| "DCR".into());
    let (split, perm): (Vec<isize>, [isize; 6]) = match mode.as_str() {
        "DCR" => (vec![-1, bi, bi, cc, h, w], [0, 3, 4, 1, 5, 2]),
        "CRD" => (vec![-1, cc, bi, bi, h, w], [0, 1, 4, 2, 5, 3]),
        other => {
            return Err(ctx.err(format!(
                "attribute mode '{other}' is not supported (DCR or CRD)"
            )))
        }
    };
    let y = f.reshape(x, &split)?;
    let y = f.permute(&y, &perm)?;
    Ok(vec![(f.reshape(&y, &[-1, cc, h * bi, w * bi])?, None)])
}

fn space_to_depth<F: Emit>(
    ctx: &NodeCtx<'_>,
    f: &F,
    args: &Args<F::Value>,
) -> Result<Outs<F::Value>> {
    let x = &req(ctx, args, 0)?.value;
    let (b, [c, h, w]) = block_geometry(ctx, f, x)?;
    let bi = b as isize;
    if h % bi != 0 || w % bi != 0 {
        return Err(ctx.err(format!(
            "spatial size {h}x{w} is not divisible by blocksize {b}"
        )));
    }
    let y = f.reshape(x, &[-1, c, h / bi, bi, w / bi, bi])?;
    let y = f.permute(&y, &[0, 3, 5, 1, 2, 4])?;
    Ok(vec![(
        f.reshape(&y, &[-1, c * bi * bi, h / bi, w / bi])?,
        None,
    )])
}
