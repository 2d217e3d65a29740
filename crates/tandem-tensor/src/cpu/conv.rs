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

use super::matmul::{gemm, GemmScalar, MatMut, MatRef, Threads};
use crate::{Conv2dParams, Error, Result};
use rayon::prelude::*;

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
    /// Multiply-adds of the whole convolution.
    fn work(&self) -> usize {
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

/// Output columns `ox` whose input column `ox * stride + delta` lies in `0..w`.
fn valid_cols(delta: isize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    let lo = if delta >= 0 {
        0
    } else {
        delta.unsigned_abs().div_ceil(stride)
    };
    let hi = if w as isize <= delta {
        0
    } else {
        (w as isize - delta).unsigned_abs().div_ceil(stride)
    };
    let hi = hi.min(ow);
    (lo.min(hi), hi)
}

/// Visits each (column-matrix row, output row `oy`) pair with the input row it reads (if
/// any) and its valid output-column range `lo..hi` and input start column.
#[inline(always)]
fn for_each_window_row(
    g: &ConvGeom,
    mut f: impl FnMut(usize, usize, Option<usize>, usize, usize, usize),
) {
    let [sh, sw] = g.params.stride;
    let [ph, pw] = g.params.padding;
    let [dh, dw] = g.params.dilation;
    for c in 0..g.cg() {
        for ki in 0..g.kh {
            let dy = (ki * dh) as isize - ph as isize;
            for kj in 0..g.kw {
                let dx = (kj * dw) as isize - pw as isize;
                let row = (c * g.kh + ki) * g.kw + kj;
                let (lo, hi) = valid_cols(dx, sw, g.w, g.ow);
                let start = (lo * sw) as isize + dx;
                for oy in 0..g.oh {
                    let iy = (oy * sh) as isize + dy;
                    let src = (iy >= 0 && (iy as usize) < g.h && lo < hi)
                        .then(|| c * g.h * g.w + iy as usize * g.w);
                    f(row, oy, src, lo, hi, start.max(0) as usize);
                }
            }
        }
    }
}

/// Lays the windows of one group's input `[C/g, H, W]` out as `col` `[C/g*kh*kw, oh*ow]`.
fn im2col<T: GemmScalar>(x: &[T], g: &ConvGeom, col: &mut [T]) {
    let (ow, p, sw) = (g.ow, g.p(), g.params.stride[1]);
    for_each_window_row(g, |row, oy, src, lo, hi, start| {
        let out = &mut col[row * p + oy * ow..row * p + (oy + 1) * ow];
        match src {
            None => out.fill(T::ZERO),
            Some(base) => {
                out[..lo].fill(T::ZERO);
                out[hi..].fill(T::ZERO);
                let s = &x[base + start..];
                if sw == 1 {
                    out[lo..hi].copy_from_slice(&s[..hi - lo]);
                } else {
                    for (i, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = s[i * sw];
                    }
                }
            }
        }
    });
}

/// Adds the columns `col` `[C/g*kh*kw, oh*ow]` back onto one group's image `[C/g, H, W]`.
fn col2im<T: GemmScalar>(col: &[T], g: &ConvGeom, x: &mut [T]) {
    let (ow, p, sw) = (g.ow, g.p(), g.params.stride[1]);
    for_each_window_row(g, |row, oy, src, lo, hi, start| {
        if let Some(base) = src {
            let c = &col[row * p + oy * ow + lo..row * p + oy * ow + hi];
            let d = &mut x[base + start..];
            if sw == 1 {
                for (d, &v) in d.iter_mut().zip(c) {
                    *d = *d + v;
                }
            } else {
                for (i, &v) in c.iter().enumerate() {
                    d[i * sw] = d[i * sw] + v;
                }
            }
        }
    });
}

/// Runs `f(sample, out_chunk_of_that_sample, col_buffer, threads)` for every sample, over
/// the thread pool when the batch and the work are big enough.
fn per_sample<T: GemmScalar>(
    g: &ConvGeom,
    out: &mut [T],
    out_per_sample: usize,
    f: impl Fn(usize, &mut [T], &mut [T], Threads) -> Result<()> + Sync,
) -> Result<()> {
    if out_per_sample == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    if g.n >= 2 && threads > 1 && g.work() >= 1 << 16 {
        let per_task = g.n.div_ceil(threads * 4).max(1);
        out.par_chunks_mut(per_task * out_per_sample)
            .enumerate()
            .try_for_each(|(t, chunk)| {
                let mut col = vec![T::ZERO; g.col_len()];
                for (i, o) in chunk.chunks_mut(out_per_sample).enumerate() {
                    f(t * per_task + i, o, &mut col, Threads::Single)?;
                }
                Ok(())
            })
    } else {
        let mut col = vec![T::ZERO; g.col_len()];
        for (s, o) in out.chunks_mut(out_per_sample).enumerate() {
            f(s, o, &mut col, Threads::Auto)?;
        }
        Ok(())
    }
}

/// The weight rows of one group as a `[O/g, C/g*kh*kw]` matrix.
fn weight_of_group<'a, T>(weight: &'a [T], g: &ConvGeom, grp: usize) -> Result<MatRef<'a, T>> {
    MatRef::new(weight, grp * g.og() * g.kg(), [g.og(), g.kg()], [g.kg(), 1])
}

/// Forward convolution of contiguous NCHW `x` with contiguous `weight`, plus `bias` `[O]`:
/// returns the contiguous `[N, O, oh, ow]` output.
pub fn conv2d<T: GemmScalar>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Result<Vec<T>> {
    g.check_len("input", x.len(), g.n * g.in_sample())?;
    g.check_len("weight", weight.len(), g.o * g.kg())?;
    if let Some(b) = bias {
        g.check_len("bias", b.len(), g.o)?;
    }
    let (p, kg, cg_len) = (g.p(), g.kg(), g.cg() * g.h * g.w);
    let mut out = vec![T::ZERO; g.n * g.out_sample()];
    per_sample(g, &mut out, g.out_sample(), |s, out_n, col, threads| {
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
                im2col(x_g, g, col);
                MatRef::row_major(col, kg, p)?
            };
            let dst = MatMut::new(out_n, grp * g.og() * p, [g.og(), p], [p, 1])?;
            gemm(
                dst,
                weight_of_group(weight, g, grp)?,
                rhs,
                bias.is_some(),
                threads,
            )?;
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
    let (p, kg, cg_len) = (g.p(), g.kg(), g.cg() * g.h * g.w);
    let mut dx = vec![T::ZERO; g.n * g.in_sample()];
    per_sample(g, &mut dx, g.in_sample(), |s, dx_n, col, threads| {
        let go_n = &grad_out[s * g.out_sample()..(s + 1) * g.out_sample()];
        for grp in 0..g.groups() {
            let lhs = weight_of_group(weight, g, grp)?.t();
            let rhs = MatRef::new(go_n, grp * g.og() * p, [g.og(), p], [p, 1])?;
            let dx_g = &mut dx_n[grp * cg_len..(grp + 1) * cg_len];
            if g.pointwise() {
                gemm(MatMut::row_major(dx_g, kg, p)?, lhs, rhs, false, threads)?;
            } else {
                gemm(MatMut::row_major(col, kg, p)?, lhs, rhs, false, threads)?;
                col2im(col, g, dx_g);
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
    let (p, kg, cg_len) = (g.p(), g.kg(), g.cg() * g.h * g.w);
    let w_len = g.o * kg;
    // Samples `range` accumulated into `dw` (zeroed by the caller).
    let accumulate =
        |range: std::ops::Range<usize>, dw: &mut [T], threads: Threads| -> Result<()> {
            let mut col = vec![T::ZERO; g.col_len()];
            for s in range {
                let x_n = &x[s * g.in_sample()..(s + 1) * g.in_sample()];
                let go_n = &grad_out[s * g.out_sample()..(s + 1) * g.out_sample()];
                for grp in 0..g.groups() {
                    let x_g = &x_n[grp * cg_len..(grp + 1) * cg_len];
                    let cols = if g.pointwise() {
                        MatRef::row_major(x_g, kg, p)?
                    } else {
                        im2col(x_g, g, &mut col);
                        MatRef::row_major(&col, kg, p)?
                    };
                    let lhs = MatRef::new(go_n, grp * g.og() * p, [g.og(), p], [p, 1])?;
                    let dst = MatMut::new(dw, grp * g.og() * kg, [g.og(), kg], [kg, 1])?;
                    gemm(dst, lhs, cols.t(), true, threads)?;
                }
            }
            Ok(())
        };
    let threads = rayon::current_num_threads();
    if g.n >= 2 && threads > 1 && g.work() >= 1 << 16 && w_len > 0 {
        let tasks = g.n.min(threads);
        let per_task = g.n.div_ceil(tasks);
        let mut partials = vec![T::ZERO; tasks * w_len];
        partials
            .par_chunks_mut(w_len)
            .enumerate()
            .try_for_each(|(t, dw)| {
                let range = (t * per_task).min(g.n)..((t + 1) * per_task).min(g.n);
                accumulate(range, dw, Threads::Single)
            })?;
        let (first, rest) = partials.split_at_mut(w_len);
        for part in rest.chunks(w_len) {
            for (a, &b) in first.iter_mut().zip(part) {
                *a = *a + b;
            }
        }
        partials.truncate(w_len);
        Ok(partials)
    } else {
        let mut dw = vec![T::ZERO; w_len];
        accumulate(0..g.n, &mut dw, Threads::Auto)?;
        Ok(dw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_column_ranges() {
        // stride 1, pad 2 on width 5 with 5 outputs: delta -2 reads columns 2..5 of the output.
        assert_eq!(valid_cols(-2, 1, 5, 5), (2, 5));
        assert_eq!(valid_cols(2, 1, 5, 5), (0, 3));
        assert_eq!(valid_cols(-3, 2, 7, 4), (2, 4));
        assert_eq!(valid_cols(9, 1, 5, 5), (0, 0));
    }

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
}
