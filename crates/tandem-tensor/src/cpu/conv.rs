//! CPU kernels: 2-D convolution and the two convolutions of its gradient, by im2col + gemm.
//!
//! For one sample and one group, im2col lays the input windows out as a `[C/g * kh * kw, oh * ow]`
//! matrix, so the convolution is `weight_g [O/g, C/g*kh*kw] @ col`, written straight into the
//! `[O/g, oh*ow]` rows of the NCHW output. The input gradient is `weight_g^T @ grad_out_g`
//! followed by col2im (a scatter-add of the columns back onto the image), the weight gradient
//! `sum over samples of grad_out_g @ col^T`. A 1x1 convolution with stride 1 and no padding
//! skips im2col: the input plane already is the column matrix.
//!
//! Work is spread over the samples of the batch (one column buffer per task, single-threaded
//! `gemm` inside); a batch of one runs `gemm` with its own threads instead.

use super::conv_direct;
use super::matmul::{gemm, GemmScalar, MatMut, MatRef, Threads};
use super::par;
use super::simd::dispatch;
use crate::{Conv2dParams, Error, Result};
use std::any::TypeId;

/// The checked geometry of a convolution: NCHW input, `[O, C/groups, kh, kw]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Stride, padding, dilation and groups.
    pub params: Conv2dParams,
}

impl ConvGeom {
    /// Checks an input shape `[N, C, H, W]` and weight shape `[O, C/groups, kh, kw]` against
    /// the parameters, naming `op` and both shapes in any error.
    pub fn new(
        op: &'static str,
        input: &[usize],
        weight: &[usize],
        p: &Conv2dParams,
    ) -> Result<ConvGeom> {
        let mismatch = |hint: String| Error::ShapeMismatch {
            op,
            lhs: input.to_vec(),
            rhs: weight.to_vec(),
            hint,
        };
        let &[n, c, h, w] = input else {
            return Err(Error::BadShape {
                op,
                shape: input.to_vec(),
                msg: "the input must be NCHW (rank 4)".into(),
            });
        };
        let &[o, cg, kh, kw] = weight else {
            return Err(Error::BadShape {
                op,
                shape: weight.to_vec(),
                msg: "the weight must be [out_channels, in_channels/groups, kh, kw] (rank 4)"
                    .into(),
            });
        };
        if p.groups == 0 || p.stride.contains(&0) || p.dilation.contains(&0) {
            return Err(Error::invalid(
                op,
                format!(
                    "groups ({}), stride {:?} and dilation {:?} must be positive",
                    p.groups, p.stride, p.dilation
                ),
            ));
        }
        if kh == 0 || kw == 0 {
            return Err(Error::BadShape {
                op,
                shape: weight.to_vec(),
                msg: "the kernel must be at least 1x1".into(),
            });
        }
        if o % p.groups != 0 || cg * p.groups != c {
            return Err(mismatch(format!(
                "with groups={} the weight takes {} input channels ({cg} per group) and needs out channels ({o}) divisible by groups; the input has {c} channels",
                p.groups,
                cg * p.groups
            )));
        }
        let [oh, ow] = p.out_size([h, w], [kh, kw]).ok_or_else(|| {
            mismatch(format!(
                "the padded input {}x{} is smaller than the dilated kernel {}x{}",
                h + 2 * p.padding[0],
                w + 2 * p.padding[1],
                p.dilation[0] * (kh - 1) + 1,
                p.dilation[1] * (kw - 1) + 1
            ))
        })?;
        Ok(ConvGeom {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            params: *p,
        })
    }

    /// `[N, O, oh, ow]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }

    fn groups(&self) -> usize {
        self.params.groups
    }
    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups()
    }
    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups()
    }
    /// Rows of the column matrix (the contracted dimension).
    fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Output positions per channel.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn in_sample(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_sample(&self) -> usize {
        self.o * self.p()
    }
    /// True when im2col would copy the input unchanged.
    fn pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.params.stride == [1, 1]
            && self.params.padding == [0, 0]
    }
    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.kg() * self.p()
        }
    }
    /// Height and width of the zero-padded input.
    fn padded_hw(&self) -> (usize, usize) {
        let [ph, pw] = self.params.padding;
        (self.h + 2 * ph, self.w + 2 * pw)
    }
    /// Multiply-adds of the whole convolution.
    pub(crate) fn work(&self) -> usize {
        self.n * self.out_sample() * self.kg()
    }

    fn check_len(&self, what: &'static str, len: usize, want: usize) -> Result<()> {
        if len == want {
            Ok(())
        } else {
            Err(Error::invalid(
                "conv2d",
                format!("{what} buffer has {len} elements, the geometry {self:?} needs {want}"),
            ))
        }
    }
}

/// Copies `src` into `dst` (equal lengths). Rows of small images are a few elements long,
/// where a `memcpy` call costs more than the copy itself, so short rows are copied inline.
#[inline(always)]
fn copy_row<T: Copy>(dst: &mut [T], src: &[T]) {
    if dst.len() >= 64 {
        dst.copy_from_slice(src);
        return;
    }
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        if let (Ok(a), Ok(b)) = (<&mut [T; 8]>::try_from(a), <&[T; 8]>::try_from(b)) {
            *a = *b;
        }
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// Fills a short row inline (see [`copy_row`]).
#[inline(always)]
fn fill_row<T: Copy>(dst: &mut [T], v: T) {
    if dst.len() >= 64 {
        dst.fill(v);
    } else {
        for d in dst {
            *d = v;
        }
    }
}

/// Per-task buffers: the column matrix (of `samples` samples side by side), a zero-padded
/// copy of one group's image, and for groups of samples the `[O/g, samples * oh*ow]`
/// product (forward) or gathered output gradient (input gradient).
struct Scratch<T> {
    col: Vec<T>,
    pad: Vec<T>,
    wide: Vec<T>,
}

impl<T: GemmScalar> Scratch<T> {
    fn new(g: &ConvGeom) -> Self {
        Scratch::for_samples(g, 1)
    }

    fn for_samples(g: &ConvGeom, samples: usize) -> Self {
        let padded = g.params.padding != [0, 0];
        let (hp, wp) = g.padded_hw();
        let wide = if samples > 1 {
            g.og() * samples * g.p()
        } else {
            0
        };
        Scratch {
            col: vec![T::ZERO; g.col_len() * samples],
            pad: vec![T::ZERO; if padded { g.cg() * hp * wp } else { 0 }],
            wide: vec![T::ZERO; wide],
        }
    }
}

/// Column-matrix elements (per task) up to which samples are grouped into one product.
const GROUP_COL_ELEMS: usize = 1 << 18;

/// Samples per product for the forward pass and the input gradient: `gemm` runs one
/// `[O/g, C/g*kh*kw] x [C/g*kh*kw, 8 * oh*ow]` product faster than eight products of a
/// single sample's width (LeNet-5's two forward convolutions: 661-709 -> 600-633 us per
/// training step in `cargo run --release --example profile_step -- lenet 64`, alternating
/// runs on 2 cores), so up to `per_task` samples whose column matrices fit
/// [`GROUP_COL_ELEMS`] share one product. Pointwise convolutions need no column matrix and
/// stay per sample.
fn group_len(g: &ConvGeom, per_task: usize) -> usize {
    if g.pointwise() || g.col_len() == 0 {
        return 1;
    }
    (GROUP_COL_ELEMS / g.col_len()).clamp(1, per_task.clamp(1, MAX_GROUP))
}

/// Most samples per product (more gained nothing measurable and grows the buffers).
const MAX_GROUP: usize = 8;

/// Runs `f(first_sample, outputs_of_the_group, scratch, threads)` over groups of
/// consecutive samples (see [`group_len`]), over the thread pool when the batch and the work
/// are big enough (as [`per_sample`]).
fn per_group<T: GemmScalar>(
    g: &ConvGeom,
    out: &mut [T],
    out_per_sample: usize,
    f: impl Fn(usize, &mut [T], &mut Scratch<T>, Threads) -> Result<()> + Sync,
) -> Result<()> {
    if out_per_sample == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    if g.n >= 2 && threads > 1 && g.work() >= 1 << 16 {
        // Per-sample work: four tasks per thread, for balance. Grouped work: one task per
        // thread, each running its groups one after the other with one set of buffers (the
        // buffers of a group are several hundred KiB, and allocating them per task cost more
        // than the grouping saved).
        let len = group_len(g, g.n.div_ceil(threads));
        let tasks = if len > 1 { threads } else { threads * 4 };
        let per_task = g.n.div_ceil(tasks).max(1);
        par::try_for_each_chunk(out, per_task * out_per_sample, |t, chunk| {
            let mut scratch = Scratch::for_samples(g, len);
            for (i, o) in chunk.chunks_mut(len * out_per_sample).enumerate() {
                f(t * per_task + i * len, o, &mut scratch, Threads::Single)?;
            }
            Ok(())
        })
    } else {
        let len = group_len(g, g.n);
        let mut scratch = Scratch::for_samples(g, len);
        for (i, o) in out.chunks_mut(len * out_per_sample).enumerate() {
            f(i * len, o, &mut scratch, Threads::Auto)?;
        }
        Ok(())
    }
}

/// Lays the windows of one group's image `[C/g, H, W]` out as the column matrix
/// `[C/g*kh*kw, oh*ow]` in `s.col`. A padded convolution first copies the image into the
/// zero-padded `s.pad`, so that every window row is a plain (strided) run of the image.
fn im2col<T: GemmScalar>(x: &[T], g: &ConvGeom, s: &mut Scratch<T>) {
    let p = g.p();
    im2col_at(x, g, &mut s.pad, &mut s.col, p, 0);
}

/// [`im2col`] into columns `offset..offset + oh*ow` of a column matrix with rows of
/// `stride` elements (the samples of a group side by side).
fn im2col_at<T: GemmScalar>(
    x: &[T],
    g: &ConvGeom,
    pad: &mut [T],
    col: &mut [T],
    stride: usize,
    offset: usize,
) {
    let (hp, wp) = g.padded_hw();
    let [ph, pw] = g.params.padding;
    let src: &[T] = if g.params.padding == [0, 0] {
        x
    } else {
        for (c, plane) in pad.chunks_exact_mut(hp * wp).enumerate() {
            for (y, row) in plane.chunks_exact_mut(wp).enumerate() {
                if y < ph || y >= ph + g.h {
                    fill_row(row, T::ZERO);
                } else {
                    let from = (c * g.h + y - ph) * g.w;
                    fill_row(&mut row[..pw], T::ZERO);
                    copy_row(&mut row[pw..pw + g.w], &x[from..from + g.w]);
                    fill_row(&mut row[pw + g.w..], T::ZERO);
                }
            }
        }
        pad
    };
    let [sh, sw] = g.params.stride;
    let [dh, dw] = g.params.dilation;
    let (ow, p) = (g.ow, g.p());
    dispatch(
        #[inline(always)]
        || {
            for c in 0..g.cg() {
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        let base = c * hp * wp + ki * dh * wp + kj * dw;
                        let row = ((c * g.kh + ki) * g.kw + kj) * stride + offset;
                        for (oy, out) in col[row..row + p].chunks_exact_mut(ow).enumerate() {
                            let from = base + oy * sh * wp;
                            if sw == 1 {
                                copy_row(out, &src[from..from + ow]);
                            } else {
                                for (ox, o) in out.iter_mut().enumerate() {
                                    *o = src[from + ox * sw];
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Adds the columns `offset..offset + oh*ow` of a column matrix `[C/g*kh*kw, stride]` back
/// onto one group's image `[C/g, H, W]` (through the zero-padded `pad` when the convolution
/// pads).
fn col2im_at<T: GemmScalar>(
    g: &ConvGeom,
    pad: &mut [T],
    col: &[T],
    stride: usize,
    offset: usize,
    x: &mut [T],
) {
    let (hp, wp) = g.padded_hw();
    let [ph, pw] = g.params.padding;
    let padded = g.params.padding != [0, 0];
    let [sh, sw] = g.params.stride;
    let [dh, dw] = g.params.dilation;
    let (ow, p) = (g.ow, g.p());
    let dst: &mut [T] = if padded {
        fill_row(pad, T::ZERO);
        &mut *pad
    } else {
        &mut *x
    };
    dispatch(
        #[inline(always)]
        || {
            for c in 0..g.cg() {
                for ki in 0..g.kh {
                    for kj in 0..g.kw {
                        let base = c * hp * wp + ki * dh * wp + kj * dw;
                        let row = ((c * g.kh + ki) * g.kw + kj) * stride + offset;
                        for (oy, vals) in col[row..row + p].chunks_exact(ow).enumerate() {
                            let to = base + oy * sh * wp;
                            if sw == 1 {
                                for (d, &v) in dst[to..to + ow].iter_mut().zip(vals) {
                                    *d = *d + v;
                                }
                            } else {
                                for (ox, &v) in vals.iter().enumerate() {
                                    dst[to + ox * sw] = dst[to + ox * sw] + v;
                                }
                            }
                        }
                    }
                }
            }
        },
    );
    if padded {
        for (c, plane) in x.chunks_exact_mut(g.h * g.w).enumerate() {
            for (y, row) in plane.chunks_exact_mut(g.w).enumerate() {
                let from = (c * hp + y + ph) * wp + pw;
                copy_row(row, &pad[from..from + g.w]);
            }
        }
    }
}

/// The weight rows of one group as a `[O/g, C/g*kh*kw]` matrix.
fn weight_of_group<'a, T>(weight: &'a [T], g: &ConvGeom, grp: usize) -> Result<MatRef<'a, T>> {
    MatRef::new(weight, grp * g.og() * g.kg(), [g.og(), g.kg()], [g.kg(), 1])
}

/// `v` as `f32` elements when `T` is `f32`.
fn as_f32<T: GemmScalar>(v: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is `f32` (same type, so same size, alignment and validity).
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) })
}

/// `v` as `f32` elements when `T` is `f32`.
fn as_f32_mut<T: GemmScalar>(v: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`; the borrow of `v` moves into the result.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len()) })
}

/// Runs the direct kernel `f` into a new output of `len` elements, when `T` is `f32` (`None`
/// otherwise). The output is not cleared first: each direct kernel writes every element of
/// its output (the forward pass and the input gradient every position of every plane, the
/// weight gradient a copy of its first partial sum), which the tests check on a buffer filled
/// with NaN.
fn direct_into<T: GemmScalar>(
    len: usize,
    f: impl FnOnce(&mut [f32]) -> Result<()>,
) -> Option<Result<Vec<T>>> {
    if TypeId::of::<T>() != TypeId::of::<f32>() {
        return None;
    }
    let mut out = super::strided::output_vec::<T>(len);
    let o32 = as_f32_mut(&mut out)?;
    Some(f(o32).map(|()| out))
}

/// Forward convolution of contiguous NCHW `x` with contiguous `weight`, plus `bias` `[O]`:
/// returns the contiguous `[N, O, oh, ow]` output. Stride-1 `f32` convolutions run on the
/// direct kernels of [`super::conv_direct`] where those apply, the rest on im2col + `gemm`.
pub fn conv2d<T: GemmScalar>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    conv2d_act(x, weight, bias, g, false)
}

/// `relu(v)` as the relu op computes it: negative values become zero, NaN and `-0.0` stay.
#[inline(always)]
fn relu<T: GemmScalar>(v: T) -> T {
    if v < T::ZERO {
        T::ZERO
    } else {
        v
    }
}

/// Applies [`relu`] to every element of `out`.
pub(crate) fn relu_in_place<T: GemmScalar>(out: &mut [T]) {
    dispatch(
        #[inline(always)]
        || {
            for v in out.iter_mut() {
                *v = relu(*v);
            }
        },
    );
}

/// [`conv2d`], followed by relu when `relu` is set: each sample's (or group of samples')
/// output gets the activation right after it is computed, while it is still in cache, with
/// the numbers of the relu op.
pub fn conv2d_act<T: GemmScalar>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    relu: bool,
) -> Result<Vec<T>> {
    g.check_len("input", x.len(), g.n * g.in_sample())?;
    g.check_len("weight", weight.len(), g.o * g.kg())?;
    if let Some(b) = bias {
        g.check_len("bias", b.len(), g.o)?;
    }
    if let (Some(x32), Some(w32)) = (as_f32(x), as_f32(weight)) {
        if conv_direct::worthwhile(g, false) {
            let b32 = bias.and_then(as_f32);
            let run = |o: &mut [f32]| conv_direct::forward(x32, w32, b32, g, o, relu);
            if let Some(out) = direct_into(g.n * g.out_sample(), run) {
                return out;
            }
        }
    }
    im2col_conv2d(x, weight, bias, g, relu)
}

/// [`conv2d_act`] by im2col + `gemm` (any stride, element type and CPU).
pub(crate) fn im2col_conv2d<T: GemmScalar>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    relu: bool,
) -> Result<Vec<T>> {
    let (p, kg, cg_len) = (g.p(), g.kg(), g.cg() * g.h * g.w);
    let (og, out_sample) = (g.og(), g.out_sample());
    let mut out = vec![T::ZERO; g.n * out_sample];
    per_group(g, &mut out, out_sample, |first, outs, scratch, threads| {
        let samples = outs.len() / out_sample;
        if samples > 1 {
            // Columns of all the samples side by side, one product per group, then each
            // sample's rows (plus the bias) copied to its place in the NCHW output.
            let wide = samples * p;
            for grp in 0..g.groups() {
                for s in 0..samples {
                    let x_n = &x[(first + s) * g.in_sample()..(first + s + 1) * g.in_sample()];
                    let x_g = &x_n[grp * cg_len..(grp + 1) * cg_len];
                    im2col_at(x_g, g, &mut scratch.pad, &mut scratch.col, wide, s * p);
                }
                gemm(
                    MatMut::row_major(&mut scratch.wide, og, wide)?,
                    weight_of_group(weight, g, grp)?,
                    MatRef::row_major(&scratch.col, kg, wide)?,
                    false,
                    threads,
                )?;
                for (s, out_n) in outs.chunks_exact_mut(out_sample).enumerate() {
                    for o in 0..og {
                        let oc = grp * og + o;
                        let src = &scratch.wide[o * wide + s * p..o * wide + (s + 1) * p];
                        let dst = &mut out_n[oc * p..(oc + 1) * p];
                        match bias {
                            Some(b) => {
                                for (d, &v) in dst.iter_mut().zip(src) {
                                    *d = b[oc] + v;
                                }
                            }
                            None => dst.copy_from_slice(src),
                        }
                    }
                }
            }
            if relu {
                relu_in_place(outs);
            }
            return Ok(());
        }
        let out_n = outs;
        let s = first;
        let x_n = &x[s * g.in_sample()..(s + 1) * g.in_sample()];
        if let Some(b) = bias {
            for (row, &v) in out_n.chunks_mut(p).zip(b) {
                row.fill(v);
            }
        }
        for grp in 0..g.groups() {
            let x_g = &x_n[grp * cg_len..(grp + 1) * cg_len];
            let rhs = if g.pointwise() {
                MatRef::row_major(x_g, kg, p)?
            } else {
                im2col(x_g, g, scratch);
                MatRef::row_major(&scratch.col, kg, p)?
            };
            let dst = MatMut::new(out_n, grp * og * p, [og, p], [p, 1])?;
            gemm(
                dst,
                weight_of_group(weight, g, grp)?,
                rhs,
                bias.is_some(),
                threads,
            )?;
        }
        if relu {
            relu_in_place(out_n);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Gradient of [`conv2d`] with respect to its input: `grad_out` `[N, O, oh, ow]` and the
/// weight give the contiguous `[N, C, H, W]` input gradient (a transposed convolution).
pub fn conv2d_input_grad<T: GemmScalar>(
    grad_out: &[T],
    weight: &[T],
    g: &ConvGeom,
) -> Result<Vec<T>> {
    g.check_len("grad_out", grad_out.len(), g.n * g.out_sample())?;
    g.check_len("weight", weight.len(), g.o * g.kg())?;
    if let (Some(go32), Some(w32)) = (as_f32(grad_out), as_f32(weight)) {
        if conv_direct::worthwhile(g, true) {
            let run = |dx: &mut [f32]| conv_direct::input_grad(go32, w32, g, dx);
            if let Some(dx) = direct_into(g.n * g.in_sample(), run) {
                return dx;
            }
        }
    }
    im2col_input_grad(grad_out, weight, g)
}

/// [`conv2d_input_grad`] by `gemm` + col2im.
pub(crate) fn im2col_input_grad<T: GemmScalar>(
    grad_out: &[T],
    weight: &[T],
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (p, kg, cg_len) = (g.p(), g.kg(), g.cg() * g.h * g.w);
    let (og, out_sample, in_sample) = (g.og(), g.out_sample(), g.in_sample());
    let mut dx = vec![T::ZERO; g.n * in_sample];
    per_group(g, &mut dx, in_sample, |first, dxs, scratch, threads| {
        let samples = dxs.len() / in_sample;
        if samples > 1 {
            // The samples' output gradients side by side, one product per group into the
            // wide column matrix, then each sample's columns added back onto its image.
            let wide = samples * p;
            for grp in 0..g.groups() {
                for s in 0..samples {
                    let go_n = &grad_out[(first + s) * out_sample..(first + s + 1) * out_sample];
                    for o in 0..og {
                        let oc = grp * og + o;
                        scratch.wide[o * wide + s * p..o * wide + (s + 1) * p]
                            .copy_from_slice(&go_n[oc * p..(oc + 1) * p]);
                    }
                }
                gemm(
                    MatMut::row_major(&mut scratch.col, kg, wide)?,
                    weight_of_group(weight, g, grp)?.t(),
                    MatRef::row_major(&scratch.wide, og, wide)?,
                    false,
                    threads,
                )?;
                for (s, dx_n) in dxs.chunks_exact_mut(in_sample).enumerate() {
                    let dx_g = &mut dx_n[grp * cg_len..(grp + 1) * cg_len];
                    col2im_at(g, &mut scratch.pad, &scratch.col, wide, s * p, dx_g);
                }
            }
            return Ok(());
        }
        let (s, dx_n) = (first, dxs);
        let go_n = &grad_out[s * out_sample..(s + 1) * out_sample];
        for grp in 0..g.groups() {
            let lhs = weight_of_group(weight, g, grp)?.t();
            let rhs = MatRef::new(go_n, grp * og * p, [og, p], [p, 1])?;
            let dx_g = &mut dx_n[grp * cg_len..(grp + 1) * cg_len];
            if g.pointwise() {
                gemm(MatMut::row_major(dx_g, kg, p)?, lhs, rhs, false, threads)?;
            } else {
                gemm(
                    MatMut::row_major(&mut scratch.col, kg, p)?,
                    lhs,
                    rhs,
                    false,
                    threads,
                )?;
                col2im_at(g, &mut scratch.pad, &scratch.col, p, 0, dx_g);
            }
        }
        Ok(())
    })?;
    Ok(dx)
}

/// Gradient of [`conv2d`] with respect to its weight: the contiguous
/// `[O, C/groups, kh, kw]` sum over the batch of `grad_out_g @ col^T`.
pub fn conv2d_weight_grad<T: GemmScalar>(x: &[T], grad_out: &[T], g: &ConvGeom) -> Result<Vec<T>> {
    g.check_len("input", x.len(), g.n * g.in_sample())?;
    g.check_len("grad_out", grad_out.len(), g.n * g.out_sample())?;
    if let (Some(x32), Some(go32)) = (as_f32(x), as_f32(grad_out)) {
        if conv_direct::worthwhile(g, false) {
            let run = |dw: &mut [f32]| conv_direct::weight_grad(x32, go32, g, dw, None);
            if let Some(dw) = direct_into(g.o * g.kg(), run) {
                return dw;
            }
        }
    }
    im2col_weight_grad(x, grad_out, g)
}

/// [`conv2d_weight_grad`] and the bias gradient in one buffer: the contiguous weight gradient
/// (`O * C/groups * kh * kw` elements), then `grad_out` summed per output channel over the
/// batch and the positions (`O`). Where the direct kernels compute the weight gradient, they
/// take the sums while copying the output gradient's rows, so the output gradient is not read
/// a second time.
pub fn conv2d_weight_bias_grad<T: GemmScalar>(
    x: &[T],
    grad_out: &[T],
    g: &ConvGeom,
) -> Result<Vec<T>> {
    g.check_len("input", x.len(), g.n * g.in_sample())?;
    g.check_len("grad_out", grad_out.len(), g.n * g.out_sample())?;
    let w_len = g.o * g.kg();
    if let (Some(x32), Some(go32)) = (as_f32(x), as_f32(grad_out)) {
        if w_len > 0 && conv_direct::worthwhile(g, false) {
            let run = |out: &mut [f32]| {
                let (dw, db) = out.split_at_mut(w_len);
                conv_direct::weight_grad(x32, go32, g, dw, Some(db))
            };
            if let Some(out) = direct_into(w_len + g.o, run) {
                return out;
            }
        }
    }
    let mut out = conv2d_weight_grad(x, grad_out, g)?;
    out.extend(channel_sums(grad_out, g));
    Ok(out)
}

/// Contiguous `[N, O, oh, ow]` `grad_out` summed per channel `o` (each sample's plane summed,
/// then the samples in order).
fn channel_sums<T: GemmScalar>(grad_out: &[T], g: &ConvGeom) -> Vec<T> {
    let plane = g.oh * g.ow;
    let mut sums = vec![T::ZERO; g.o];
    if plane == 0 || g.o == 0 {
        return sums;
    }
    for sample in grad_out.chunks_exact(g.o * plane) {
        for (s, p) in sums.iter_mut().zip(sample.chunks_exact(plane)) {
            *s = *s + p.iter().fold(T::ZERO, |a, &v| a + v);
        }
    }
    sums
}

/// [`conv2d_weight_grad`] by im2col + `gemm`.
pub(crate) fn im2col_weight_grad<T: GemmScalar>(
    x: &[T],
    grad_out: &[T],
    g: &ConvGeom,
) -> Result<Vec<T>> {
    let (p, kg, cg_len, o) = (g.p(), g.kg(), g.cg() * g.h * g.w, g.o);
    let w_len = o * kg;
    // Samples `range` accumulated into `dw_t`, the gradient stored transposed as
    // `[C/g*kh*kw, O]`: `gemm` runs this product about twice as fast into a column-major
    // destination as into a row-major one. Zeroed by the caller.
    let accumulate =
        |range: std::ops::Range<usize>, dw_t: &mut [T], threads: Threads| -> Result<()> {
            let mut scratch = Scratch::new(g);
            for s in range {
                let x_n = &x[s * g.in_sample()..(s + 1) * g.in_sample()];
                let go_n = &grad_out[s * g.out_sample()..(s + 1) * g.out_sample()];
                for grp in 0..g.groups() {
                    let x_g = &x_n[grp * cg_len..(grp + 1) * cg_len];
                    let cols = if g.pointwise() {
                        MatRef::row_major(x_g, kg, p)?
                    } else {
                        im2col(x_g, g, &mut scratch);
                        MatRef::row_major(&scratch.col, kg, p)?
                    };
                    let lhs = MatRef::new(go_n, grp * g.og() * p, [g.og(), p], [p, 1])?;
                    let dst = MatMut::new(dw_t, grp * g.og(), [g.og(), kg], [1, o])?;
                    gemm(dst, lhs, cols.t(), true, threads)?;
                }
            }
            Ok(())
        };
    let threads = rayon::current_num_threads();
    let tasks = if g.n >= 2 && threads > 1 && g.work() >= 1 << 16 {
        g.n.min(threads)
    } else {
        1
    };
    let mut partials = vec![T::ZERO; tasks * w_len];
    if w_len == 0 {
        return Ok(partials);
    }
    if tasks > 1 {
        let per_task = g.n.div_ceil(tasks);
        par::try_for_each_chunk(&mut partials, w_len, |t, dw_t| {
            let range = (t * per_task).min(g.n)..((t + 1) * per_task).min(g.n);
            accumulate(range, dw_t, Threads::Single)
        })?;
    } else {
        accumulate(0..g.n, &mut partials, Threads::Auto)?;
    }
    // Sum the partial gradients and transpose `[kg, O]` back to `[O, kg]`.
    let mut dw = vec![T::ZERO; w_len];
    for (oc, row) in dw.chunks_exact_mut(kg).enumerate() {
        for (k, d) in row.iter_mut().enumerate() {
            let mut acc = T::ZERO;
            for part in partials.chunks_exact(w_len) {
                acc = acc + part[k * o + oc];
            }
            *d = acc;
        }
    }
    Ok(dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_errors() {
        let p = Conv2dParams::default();
        assert!(ConvGeom::new("conv2d", &[1, 3, 8], &[4, 3, 3, 3], &p).is_err());
        let e = ConvGeom::new("conv2d", &[1, 3, 8, 8], &[4, 2, 3, 3], &p).unwrap_err();
        assert!(e.to_string().contains("[1, 3, 8, 8]") && e.to_string().contains("[4, 2, 3, 3]"));
        let e = ConvGeom::new("conv2d", &[1, 3, 2, 8], &[4, 3, 3, 3], &p).unwrap_err();
        assert!(
            e.to_string().contains("smaller than the dilated kernel"),
            "{e}"
        );
        let q = Conv2dParams {
            stride: [0, 1],
            ..p
        };
        assert!(ConvGeom::new("conv2d", &[1, 3, 8, 8], &[4, 3, 3, 3], &q).is_err());
    }

    /// Forward and input-gradient results of a batch equal, bit for bit, those of each sample
    /// run alone: grouping samples into one product changes neither the summation order of
    /// an output element nor the bias addition (LeNet-5's convolutions, and a padded, strided,
    /// dilated, grouped one), on 1 and 2 threads.
    #[test]
    fn grouped_samples_match_single_samples_bit_for_bit() {
        let conv = |stride, padding, dilation, groups| Conv2dParams {
            stride,
            padding,
            dilation,
            groups,
        };
        let cases = [
            (
                [64usize, 1, 28, 28],
                [6usize, 1, 5, 5],
                conv([1, 1], [2, 2], [1, 1], 1),
            ),
            (
                [64, 6, 14, 14],
                [16, 6, 5, 5],
                conv([1, 1], [0, 0], [1, 1], 1),
            ),
            ([7, 4, 11, 9], [6, 2, 3, 2], conv([2, 1], [1, 2], [2, 1], 2)),
        ];
        for (input, wshape, params) in cases {
            let g = ConvGeom::new("conv2d", &input, &wshape, &params).unwrap();
            let fill = |n: usize, k: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * k) % 97) as f32 - 48.0) / 31.0)
                    .collect()
            };
            let x = fill(input.iter().product(), 13);
            let w = fill(wshape.iter().product(), 7);
            let b = fill(wshape[0], 5);
            let go = fill(g.n * g.out_sample(), 11);
            let single = ConvGeom::new(
                "conv2d",
                &[1, input[1], input[2], input[3]],
                &wshape,
                &params,
            )
            .unwrap();
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (y, dx) = pool.install(|| {
                    (
                        conv2d(&x, &w, Some(&b), &g).unwrap(),
                        conv2d_input_grad(&go, &w, &g).unwrap(),
                    )
                });
                for s in 0..g.n {
                    let xs = &x[s * g.in_sample()..(s + 1) * g.in_sample()];
                    let gos = &go[s * g.out_sample()..(s + 1) * g.out_sample()];
                    let ys = conv2d(xs, &w, Some(&b), &single).unwrap();
                    let dxs = conv2d_input_grad(gos, &w, &single).unwrap();
                    let same = |a: &[f32], b: &[f32]| {
                        a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits())
                    };
                    assert!(
                        same(&y[s * g.out_sample()..(s + 1) * g.out_sample()], &ys),
                        "{input:?} forward, sample {s}, {threads} threads"
                    );
                    assert!(
                        same(&dx[s * g.in_sample()..(s + 1) * g.in_sample()], &dxs),
                        "{input:?} input gradient, sample {s}, {threads} threads"
                    );
                }
            }
        }
    }
}
