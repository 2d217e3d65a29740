//! CPU kernels: 2-D max, average and adaptive average pooling over NCHW planes, and their
//! gradients.
//!
//! Every kernel works plane by plane (one `H x W` image of one channel of one sample), so
//! planes are spread over the thread pool when the tensor is large. Max and average pooling
//! with a 2x2 window, stride 2 and no padding (the common case) have a dedicated loop.

use super::simd::{dispatch, PARALLEL_THRESHOLD};
use crate::{Error, Float, Pool2dParams, Result};
use rayon::prelude::*;

/// The checked geometry of a pooling: NCHW input, window, output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Number of planes (`N * C`).
    pub planes: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Window, stride, padding, dilation and averaging options.
    pub params: Pool2dParams,
}

impl PoolGeom {
    /// Checks an NCHW `input` shape against the parameters, naming `op` in any error. Like
    /// PyTorch, padding may be at most half the window.
    pub fn new(op: &'static str, input: &[usize], p: &Pool2dParams) -> Result<PoolGeom> {
        let &[n, c, h, w] = input else {
            return Err(Error::BadShape {
                op,
                shape: input.to_vec(),
                msg: "the input must be NCHW (rank 4)".into(),
            });
        };
        if [p.kernel, p.stride, p.dilation]
            .iter()
            .flatten()
            .any(|&v| v == 0)
        {
            return Err(Error::invalid(
                op,
                format!(
                    "kernel {:?}, stride {:?} and dilation {:?} must be positive",
                    p.kernel, p.stride, p.dilation
                ),
            ));
        }
        if p.padding[0] > p.kernel[0] / 2 || p.padding[1] > p.kernel[1] / 2 {
            return Err(Error::invalid(
                op,
                format!(
                    "padding {:?} must be at most half the window {:?}",
                    p.padding, p.kernel
                ),
            ));
        }
        let [oh, ow] = p.out_size([h, w]).ok_or_else(|| Error::BadShape {
            op,
            shape: input.to_vec(),
            msg: format!(
                "the window {:?} (dilation {:?}) is bigger than the input padded by {:?}",
                p.kernel, p.dilation, p.padding
            ),
        })?;
        Ok(PoolGeom {
            planes: n * c,
            h,
            w,
            oh,
            ow,
            params: *p,
        })
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }
    fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// True for the 2x2, stride 2, unpadded, undilated window that tiles the input.
    fn is_2x2(&self) -> bool {
        let p = &self.params;
        p.kernel == [2, 2]
            && p.stride == [2, 2]
            && p.padding == [0, 0]
            && p.dilation == [1, 1]
            && 2 * self.oh <= self.h
            && 2 * self.ow <= self.w
    }

    fn check(&self, op: &'static str, what: &str, len: usize, per_plane: usize) -> Result<()> {
        if len == self.planes * per_plane {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                format!(
                    "{what} buffer has {len} elements, {} planes of {per_plane} expected",
                    self.planes
                ),
            ))
        }
    }

    /// Input positions `(start, len)` of the window of output index `o` along axis `a`,
    /// clipped to the input; the stride between taps is the dilation.
    #[inline(always)]
    fn taps(&self, a: usize, o: usize) -> (usize, usize) {
        let p = &self.params;
        let size = if a == 0 { self.h } else { self.w };
        let first = (o * p.stride[a]) as isize - p.padding[a] as isize;
        let d = p.dilation[a] as isize;
        let mut start = 0;
        let mut count = 0;
        for t in 0..p.kernel[a] as isize {
            let i = first + t * d;
            if i >= 0 && (i as usize) < size {
                if count == 0 {
                    start = i as usize;
                }
                count += 1;
            }
        }
        (start, count)
    }

    /// Average pooling: the clipped window `(start, end)` along axis `a` and the size of the
    /// window clipped to the padded input (PyTorch's count when `count_include_pad`).
    #[inline(always)]
    fn avg_span(&self, a: usize, o: usize) -> (usize, usize, usize) {
        let p = &self.params;
        let size = if a == 0 { self.h } else { self.w };
        let first = (o * p.stride[a]) as isize - p.padding[a] as isize;
        let end = (first + p.kernel[a] as isize).min((size + p.padding[a]) as isize);
        let padded_len = (end - first).max(0) as usize;
        let s = first.max(0) as usize;
        let e = end.clamp(0, size as isize) as usize;
        (s, e.max(s), padded_len)
    }
}

/// Runs `f(input_plane, output_plane)` over all planes, in parallel when large.
fn planes<A: Sync, B: Send>(
    input: &[A],
    in_plane: usize,
    output: &mut [B],
    out_plane: usize,
    f: impl Fn(&[A], &mut [B]) + Sync + Send,
) {
    if in_plane == 0 || out_plane == 0 {
        return;
    }
    if input.len() + output.len() >= PARALLEL_THRESHOLD {
        output
            .par_chunks_mut(out_plane)
            .zip(input.par_chunks(in_plane))
            .for_each(|(o, i)| f(i, o));
    } else {
        for (o, i) in output.chunks_mut(out_plane).zip(input.chunks(in_plane)) {
            f(i, o);
        }
    }
}

/// The clipped taps `(first, count)` of every output row and column, computed once per call.
struct Taps {
    rows: Vec<(usize, usize)>,
    cols: Vec<(usize, usize)>,
}

impl Taps {
    fn new(g: &PoolGeom) -> Taps {
        Taps {
            rows: (0..g.oh).map(|o| g.taps(0, o)).collect(),
            cols: (0..g.ow).map(|o| g.taps(1, o)).collect(),
        }
    }
}

/// PyTorch's max-pooling rule: a larger value or a NaN replaces the current maximum, so ties
/// keep the first maximum in row-major order and NaN propagates.
#[inline(always)]
fn replaces<T: Float>(best: T, v: T) -> bool {
    #[allow(clippy::eq_op)]
    let nan = v != v;
    v > best || nan
}

/// The window maximum and its plane index. A window whose taps all fall in the padding
/// (possible with dilation) gives -inf and no index.
#[inline(always)]
fn window_max<T: Float>(
    x: &[T],
    g: &PoolGeom,
    (ys, yn): (usize, usize),
    (xs, xn): (usize, usize),
) -> (T, Option<usize>) {
    let [dh, dw] = g.params.dilation;
    let mut best = T::NEG_INFINITY;
    let mut at = (yn > 0 && xn > 0).then_some(ys * g.w + xs);
    for iy in (ys..).step_by(dh).take(yn) {
        for ix in (xs..).step_by(dw).take(xn) {
            let v = x[iy * g.w + ix];
            if replaces(best, v) {
                best = v;
                at = Some(iy * g.w + ix);
            }
        }
    }
    (best, at)
}

#[inline(always)]
fn pick<T: Float>(best: T, v: T) -> T {
    if replaces(best, v) {
        v
    } else {
        best
    }
}

/// Max pooling of contiguous NCHW `x` (padding counts as -inf); contiguous output.
pub fn max_pool2d<T: Float>(x: &[T], g: &PoolGeom) -> Result<Vec<T>> {
    g.check("max_pool2d", "input", x.len(), g.in_plane())?;
    let mut out = vec![T::ZERO; g.planes * g.out_plane()];
    let fast = g.is_2x2();
    let taps = Taps::new(g);
    planes(x, g.in_plane(), &mut out, g.out_plane(), |x, out| {
        dispatch(
            #[inline(always)]
            || {
                if fast {
                    for (oy, row) in out.chunks_exact_mut(g.ow).enumerate() {
                        let r0 = &x[2 * oy * g.w..][..2 * g.ow];
                        let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
                        for ((o, a), b) in row
                            .iter_mut()
                            .zip(r0.chunks_exact(2))
                            .zip(r1.chunks_exact(2))
                        {
                            *o = pick(pick(pick(a[0], a[1]), b[0]), b[1]);
                        }
                    }
                    return;
                }
                for (row, &ty) in out.chunks_exact_mut(g.ow).zip(&taps.rows) {
                    for (o, &tx) in row.iter_mut().zip(&taps.cols) {
                        *o = window_max(x, g, ty, tx).0;
                    }
                }
            },
        )
    });
    Ok(out)
}

/// Gradient of [`max_pool2d`]: each output gradient goes to its window's maximum
/// (recomputed from `x`), summed where windows overlap.
pub fn max_pool2d_backward<T: Float>(grad_out: &[T], x: &[T], g: &PoolGeom) -> Result<Vec<T>> {
    let op = "max_pool2d_backward";
    g.check(op, "input", x.len(), g.in_plane())?;
    g.check(op, "grad_out", grad_out.len(), g.out_plane())?;
    let mut dx = vec![T::ZERO; x.len()];
    let (ip, opl) = (g.in_plane(), g.out_plane());
    if opl == 0 || ip == 0 {
        return Ok(dx);
    }
    let fast = g.is_2x2();
    let taps = Taps::new(g);
    let w = g.w;
    let work = |((dx, x), go): ((&mut [T], &[T]), &[T])| {
        if fast {
            // Disjoint 2x2 windows: the gradient is written, not accumulated.
            for (oy, grow) in go.chunks_exact(g.ow).enumerate() {
                let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
                for (ox, &gv) in grow.iter().enumerate() {
                    let c = 2 * ox;
                    let mut at = r0 + c;
                    let mut best = x[at];
                    for i in [r0 + c + 1, r1 + c, r1 + c + 1] {
                        if replaces(best, x[i]) {
                            best = x[i];
                            at = i;
                        }
                    }
                    dx[at] = gv;
                }
            }
            return;
        }
        for (grow, &ty) in go.chunks_exact(g.ow).zip(&taps.rows) {
            for (&gv, &tx) in grow.iter().zip(&taps.cols) {
                if let (_, Some(at)) = window_max(x, g, ty, tx) {
                    dx[at] += gv;
                }
            }
        }
    };
    if x.len() >= PARALLEL_THRESHOLD {
        dx.par_chunks_mut(ip)
            .zip(x.par_chunks(ip))
            .zip(grad_out.par_chunks(opl))
            .for_each(work);
    } else {
        dx.chunks_mut(ip)
            .zip(x.chunks(ip))
            .zip(grad_out.chunks(opl))
            .for_each(work);
    }
    Ok(dx)
}

/// Average pooling of contiguous NCHW `x` (zero padding; the divisor follows
/// `count_include_pad` and PyTorch's clipping of windows to the padded input).
pub fn avg_pool2d<T: Float>(x: &[T], g: &PoolGeom) -> Result<Vec<T>> {
    g.check("avg_pool2d", "input", x.len(), g.in_plane())?;
    let mut out = vec![T::ZERO; g.planes * g.out_plane()];
    let fast = g.is_2x2();
    let quarter = T::from_f32(0.25);
    planes(x, g.in_plane(), &mut out, g.out_plane(), |x, out| {
        dispatch(
            #[inline(always)]
            || {
                if fast {
                    for (oy, row) in out.chunks_exact_mut(g.ow).enumerate() {
                        let r0 = &x[2 * oy * g.w..][..2 * g.ow];
                        let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
                        for ((o, a), b) in row
                            .iter_mut()
                            .zip(r0.chunks_exact(2))
                            .zip(r1.chunks_exact(2))
                        {
                            *o = (a[0] + a[1] + b[0] + b[1]) * quarter;
                        }
                    }
                    return;
                }
                for oy in 0..g.oh {
                    let (ys, ye, ylen) = g.avg_span(0, oy);
                    for ox in 0..g.ow {
                        let (xs, xe, xlen) = g.avg_span(1, ox);
                        let mut sum = T::ZERO;
                        for iy in ys..ye {
                            for &v in &x[iy * g.w + xs..iy * g.w + xe] {
                                sum += v;
                            }
                        }
                        out[oy * g.ow + ox] = sum / avg_divisor(g, ye - ys, xe - xs, ylen, xlen);
                    }
                }
            },
        )
    });
    Ok(out)
}

#[inline(always)]
fn avg_divisor<T: Float>(g: &PoolGeom, ny: usize, nx: usize, ylen: usize, xlen: usize) -> T {
    let count = if g.params.count_include_pad {
        ylen * xlen
    } else {
        ny * nx
    };
    T::from_f32(count.max(1) as f32)
}

/// Gradient of [`avg_pool2d`]: each output gradient, divided like the forward, spread over
/// its window's input elements.
pub fn avg_pool2d_backward<T: Float>(grad_out: &[T], g: &PoolGeom) -> Result<Vec<T>> {
    g.check(
        "avg_pool2d_backward",
        "grad_out",
        grad_out.len(),
        g.out_plane(),
    )?;
    let mut dx = vec![T::ZERO; g.planes * g.in_plane()];
    planes(grad_out, g.out_plane(), &mut dx, g.in_plane(), |go, dx| {
        for oy in 0..g.oh {
            let (ys, ye, ylen) = g.avg_span(0, oy);
            for ox in 0..g.ow {
                let (xs, xe, xlen) = g.avg_span(1, ox);
                let v = go[oy * g.ow + ox] / avg_divisor(g, ye - ys, xe - xs, ylen, xlen);
                for iy in ys..ye {
                    for d in &mut dx[iy * g.w + xs..iy * g.w + xe] {
                        *d += v;
                    }
                }
            }
        }
    });
    Ok(dx)
}

/// Cell `i` of `n` adaptive cells over `size` inputs: `floor(i*size/n) .. ceil((i+1)*size/n)`.
#[inline(always)]
fn adaptive_cell(i: usize, n: usize, size: usize) -> (usize, usize) {
    (i * size / n, ((i + 1) * size).div_ceil(n))
}

/// Adaptive average pooling of `planes` contiguous `h x w` planes to `out = [oh, ow]`.
pub fn adaptive_avg_pool2d<T: Float>(
    x: &[T],
    planes_n: usize,
    hw: [usize; 2],
    out: [usize; 2],
) -> Result<Vec<T>> {
    let ([h, w], [oh, ow]) = (hw, out);
    if x.len() != planes_n * h * w {
        return Err(Error::invalid(
            "adaptive_avg_pool2d",
            format!(
                "input buffer has {} elements, {planes_n} planes of {h}x{w} expected",
                x.len()
            ),
        ));
    }
    let mut y = vec![T::ZERO; planes_n * oh * ow];
    if oh == 0 || ow == 0 {
        return Ok(y);
    }
    planes(x, h * w, &mut y, oh * ow, |x, y| {
        for oy in 0..oh {
            let (ys, ye) = adaptive_cell(oy, oh, h);
            for ox in 0..ow {
                let (xs, xe) = adaptive_cell(ox, ow, w);
                let mut sum = T::ZERO;
                for iy in ys..ye {
                    for &v in &x[iy * w + xs..iy * w + xe] {
                        sum += v;
                    }
                }
                y[oy * ow + ox] = sum / T::from_f32(((ye - ys) * (xe - xs)).max(1) as f32);
            }
        }
    });
    Ok(y)
}

/// Gradient of [`adaptive_avg_pool2d`]: each output gradient spread evenly over its cell.
pub fn adaptive_avg_pool2d_backward<T: Float>(
    grad_out: &[T],
    planes_n: usize,
    hw: [usize; 2],
    out: [usize; 2],
) -> Result<Vec<T>> {
    let ([h, w], [oh, ow]) = (hw, out);
    if grad_out.len() != planes_n * oh * ow {
        return Err(Error::invalid(
            "adaptive_avg_pool2d_backward",
            format!(
                "grad_out buffer has {} elements, {planes_n} planes of {oh}x{ow} expected",
                grad_out.len()
            ),
        ));
    }
    let mut dx = vec![T::ZERO; planes_n * h * w];
    planes(grad_out, oh * ow, &mut dx, h * w, |go, dx| {
        for oy in 0..oh {
            let (ys, ye) = adaptive_cell(oy, oh, h);
            for ox in 0..ow {
                let (xs, xe) = adaptive_cell(ox, ow, w);
                let v = go[oy * ow + ox] / T::from_f32(((ye - ys) * (xe - xs)).max(1) as f32);
                for iy in ys..ye {
                    for d in &mut dx[iy * w + xs..iy * w + xe] {
                        *d += v;
                    }
                }
            }
        }
    });
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_cells_cover_the_input() {
        assert_eq!(adaptive_cell(0, 3, 7), (0, 3));
        assert_eq!(adaptive_cell(1, 3, 7), (2, 5));
        assert_eq!(adaptive_cell(2, 3, 7), (4, 7));
        assert_eq!(adaptive_cell(4, 5, 2), (1, 2));
    }

    #[test]
    fn geometry_errors() {
        let p = Pool2dParams::square(2, 2, 0);
        assert!(PoolGeom::new("max_pool2d", &[1, 4, 4], &p).is_err());
        assert!(PoolGeom::new("max_pool2d", &[1, 1, 1, 4], &p).is_err());
        assert!(
            PoolGeom::new("max_pool2d", &[1, 1, 4, 4], &Pool2dParams::square(2, 2, 2)).is_err()
        );
        assert!(
            PoolGeom::new("max_pool2d", &[1, 1, 4, 4], &Pool2dParams::square(2, 0, 0)).is_err()
        );
    }
}
