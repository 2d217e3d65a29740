//! CPU kernels: 2-D max, average and adaptive average pooling over NCHW planes, and their
//! gradients.
//!
//! Every kernel works plane by plane (one `H x W` image of one channel of one sample), so
//! planes are spread over the thread pool when the tensor is large. Max and average pooling
//! with a 2x2 window, stride 2 and no padding (the common case) have a dedicated loop.

use super::par;
use super::simd::{dispatch, PARALLEL_THRESHOLD};
use crate::{Error, Float, Pool2dParams, Result};

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

/// Planes per parallel task: about four tasks per thread.
fn planes_per_task(planes: usize) -> usize {
    planes.div_ceil(4 * rayon::current_num_threads()).max(1)
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
        let per = planes_per_task(output.len() / out_plane);
        par::for_each_chunk(output, per * out_plane, |t, o| {
            let input = &input[t * per * in_plane..];
            for (o, i) in o.chunks_mut(out_plane).zip(input.chunks(in_plane)) {
                f(i, o);
            }
        });
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
    max_pool2d_backward_masked(grad_out, x, g, None)
}

/// [`max_pool2d_backward`] times `cast(x > threshold)` when a threshold is given: the
/// gradient of max pooling followed by the gradient mask of the relu that produced `x` (whose
/// output is `x`). Each plane's gradient is multiplied by its mask (`d * 1` or `d * 0`, the
/// numbers of the two ops one after the other, NaN and signed zeros included) right after it
/// is computed, while it is still in cache.
pub fn max_pool2d_backward_masked<T: Float>(
    grad_out: &[T],
    x: &[T],
    g: &PoolGeom,
    threshold: Option<T>,
) -> Result<Vec<T>> {
    let op = "max_pool2d_backward";
    g.check(op, "input", x.len(), g.in_plane())?;
    g.check(op, "grad_out", grad_out.len(), g.out_plane())?;
    let fast = g.is_2x2();
    // Disjoint 2x2 windows that tile the plane write every input position (the gradient or
    // zero): no clearing pass first. Otherwise positions outside every window stay zero and
    // overlapping windows add up.
    let mut dx = if fast && 2 * g.oh == g.h && 2 * g.ow == g.w {
        super::strided::output_vec::<T>(x.len())
    } else {
        vec![T::ZERO; x.len()]
    };
    let (ip, opl) = (g.in_plane(), g.out_plane());
    if opl == 0 || ip == 0 {
        return Ok(dx);
    }
    let taps = Taps::new(g);
    let plane_backward = |dx: &mut [T], x: &[T], go: &[T]| {
        if fast {
            // Disjoint 2x2 windows: each of the four inputs of a window gets the gradient or
            // zero, chosen without branches so that the loop vectorizes (same first-maximum
            // and NaN rule as the forward pass).
            let (w, ow) = (g.w, g.ow);
            dispatch(
                #[inline(always)]
                || {
                    for (oy, grow) in go.chunks_exact(ow).enumerate() {
                        let (top, bottom) = dx[2 * oy * w..].split_at_mut(w);
                        let (d0, d1) = (&mut top[..2 * ow], &mut bottom[..2 * ow]);
                        let x0 = &x[2 * oy * w..][..2 * ow];
                        let x1 = &x[(2 * oy + 1) * w..][..2 * ow];
                        backward_2x2_row(grow, x0, x1, d0, d1);
                    }
                },
            );
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
    let work = |((dx, x), go): ((&mut [T], &[T]), &[T])| {
        plane_backward(dx, x, go);
        if let Some(t) = threshold {
            mask_plane(dx, x, t);
        }
    };
    if x.len() >= PARALLEL_THRESHOLD {
        let per = planes_per_task(dx.len() / ip);
        par::for_each_chunk(&mut dx, per * ip, |t, d| {
            d.chunks_mut(ip)
                .zip(x[t * per * ip..].chunks(ip))
                .zip(grad_out[t * per * opl..].chunks(opl))
                .for_each(&work)
        });
    } else {
        dx.chunks_mut(ip)
            .zip(x.chunks(ip))
            .zip(grad_out.chunks(opl))
            .for_each(work);
    }
    Ok(dx)
}

/// `d[i] = d[i] * cast(x[i] > t)`, in `d`'s dtype.
fn mask_plane<T: Float>(d: &mut [T], x: &[T], t: T) {
    dispatch(
        #[inline(always)]
        || {
            for (d, &v) in d.iter_mut().zip(x) {
                *d = *d * if v > t { T::ONE } else { T::ZERO };
            }
        },
    );
}

/// One output row of the 2x2 max-pool gradient: `grow[i]` goes to the first maximum of
/// window `i` (`x0[2i], x0[2i+1], x1[2i], x1[2i+1]`, NaN counting as the maximum), the other
/// three positions get zero. `f32` on AVX-512 takes 16 windows per step with explicit
/// de-interleaving shuffles (the compiler leaves the interleaved loop scalar).
#[inline(always)]
fn backward_2x2_row<T: Float>(grow: &[T], x0: &[T], x1: &[T], d0: &mut [T], d1: &mut [T]) {
    let ow = grow.len();
    let (x0, x1) = (&x0[..2 * ow], &x1[..2 * ow]);
    let (d0, d1) = (&mut d0[..2 * ow], &mut d1[..2 * ow]);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
        && super::simd::isa() == super::simd::Isa::Avx512
    {
        let f = |v: &[T]| v.as_ptr().cast::<f32>();
        let fm = |v: &mut [T]| v.as_mut_ptr().cast::<f32>();
        // SAFETY: `T` is `f32` (checked above), the CPU has AVX-512 (`isa()`), and the
        // rows hold `2 * ow` (`grow`: `ow`) elements, as `backward_2x2_f32` reads and writes.
        done = unsafe { backward_2x2_f32(ow, f(grow), f(x0), f(x1), fm(d0), fm(d1)) };
    }
    for i in done..ow {
        let (a0, a1, b0, b1) = (x0[2 * i], x0[2 * i + 1], x1[2 * i], x1[2 * i + 1]);
        let r1 = replaces(a0, a1);
        let m1 = if r1 { a1 } else { a0 };
        let r2 = replaces(m1, b0);
        let m2 = if r2 { b0 } else { m1 };
        let r3 = replaces(m2, b1);
        // The last replacement wins.
        let gv = grow[i];
        d0[2 * i] = if !r1 && !r2 && !r3 { gv } else { T::ZERO };
        d0[2 * i + 1] = if r1 && !r2 && !r3 { gv } else { T::ZERO };
        d1[2 * i] = if r2 && !r3 { gv } else { T::ZERO };
        d1[2 * i + 1] = if r3 { gv } else { T::ZERO };
    }
}

/// The AVX-512 body of [`backward_2x2_row`] for `f32`: handles all `ow` windows (the last
/// ones under lane masks) and returns `ow`.
///
/// # Safety
/// The CPU must have AVX-512F; `grow` must hold `ow` floats and `x0`, `x1`, `d0`, `d1`
/// `2 * ow` floats each (`d0`, `d1` writable and not aliasing the others).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn backward_2x2_f32(
    ow: usize,
    grow: *const f32,
    x0: *const f32,
    x1: *const f32,
    d0: *mut f32,
    d1: *mut f32,
) -> usize {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    // `v` replaces `best`: greater, or NaN.
    let rep = |best: __m512, v: __m512| {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
    };
    let mut i = 0;
    while i < ow {
        // Windows `i..i + n` (n = 16 but at the end of the row): their 2n inputs per row
        // are lanes `..2n` of the two vectors, loaded and stored under masks.
        let n = (ow - i).min(16);
        let lanes = |k: usize| if k >= 16 { 0xffff_u16 } else { (1u16 << k) - 1 };
        let (m0, m1) = (lanes(2 * n), lanes(2 * n - 2 * n.min(8)));
        // SAFETY: the masked lanes stay inside the rows (the caller's contract).
        unsafe {
            let p0 = _mm512_maskz_loadu_ps(m0, x0.add(2 * i));
            let p1 = _mm512_maskz_loadu_ps(m1, x0.add(2 * i + 16));
            let q0 = _mm512_maskz_loadu_ps(m0, x1.add(2 * i));
            let q1 = _mm512_maskz_loadu_ps(m1, x1.add(2 * i + 16));
            let a0 = _mm512_permutex2var_ps(p0, even, p1);
            let a1 = _mm512_permutex2var_ps(p0, odd, p1);
            let b0 = _mm512_permutex2var_ps(q0, even, q1);
            let b1 = _mm512_permutex2var_ps(q0, odd, q1);
            let r1 = rep(a0, a1);
            let m1v = _mm512_mask_blend_ps(r1, a0, a1);
            let r2 = rep(m1v, b0);
            let m2v = _mm512_mask_blend_ps(r2, m1v, b0);
            let r3 = rep(m2v, b1);
            let g = _mm512_maskz_loadu_ps(lanes(n), grow.add(i));
            let o00 = _mm512_maskz_mov_ps(!(r1 | r2 | r3), g);
            let o01 = _mm512_maskz_mov_ps(r1 & !r2 & !r3, g);
            let o10 = _mm512_maskz_mov_ps(r2 & !r3, g);
            let o11 = _mm512_maskz_mov_ps(r3, g);
            _mm512_mask_storeu_ps(d0.add(2 * i), m0, _mm512_permutex2var_ps(o00, lo, o01));
            _mm512_mask_storeu_ps(d0.add(2 * i + 16), m1, _mm512_permutex2var_ps(o00, hi, o01));
            _mm512_mask_storeu_ps(d1.add(2 * i), m0, _mm512_permutex2var_ps(o10, lo, o11));
            _mm512_mask_storeu_ps(d1.add(2 * i + 16), m1, _mm512_permutex2var_ps(o10, hi, o11));
        }
        i += n;
    }
    ow
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

    #[test]
    fn max_pool_2x2_backward_sends_each_gradient_to_the_first_maximum() {
        // Ties, NaNs and an odd width (the last column belongs to no window), in sizes that
        // run both the plain and the parallel path.
        for &(n, c, h, w) in &[
            (1usize, 1usize, 4usize, 5usize),
            (4, 3, 6, 9),
            (8, 16, 20, 24),
            (2, 3, 4, 41),
            (2, 2, 6, 64),
        ] {
            let len = n * c * h * w;
            let x: Vec<f32> = (0..len)
                .map(|i| match i * 7 % 13 {
                    0 => f32::NAN,
                    k => (k % 4) as f32,
                })
                .collect();
            let g =
                PoolGeom::new("max_pool2d", &[n, c, h, w], &Pool2dParams::square(2, 2, 0)).unwrap();
            let go: Vec<f32> = (0..g.planes * g.out_plane())
                .map(|i| 1.0 + i as f32)
                .collect();
            let dx = max_pool2d_backward(&go, &x, &g).unwrap();
            let mut want = vec![0.0f32; len];
            for plane in 0..n * c {
                for oy in 0..h / 2 {
                    for ox in 0..w / 2 {
                        let base = plane * h * w;
                        let taps = [
                            base + 2 * oy * w + 2 * ox,
                            base + 2 * oy * w + 2 * ox + 1,
                            base + (2 * oy + 1) * w + 2 * ox,
                            base + (2 * oy + 1) * w + 2 * ox + 1,
                        ];
                        let mut at = taps[0];
                        for &t in &taps[1..] {
                            // PyTorch's rule: greater, or NaN (a later NaN wins).
                            if x[t] > x[at] || x[t].is_nan() {
                                at = t;
                            }
                        }
                        want[at] += go[(plane * (h / 2) + oy) * (w / 2) + ox];
                    }
                }
            }
            let bad = dx.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(bad, None, "{n}x{c}x{h}x{w}: first wrong position");
        }
    }
}
