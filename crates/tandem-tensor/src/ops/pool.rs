//! Tensor operations: 2-D max, average and adaptive average pooling, and their gradients.

use super::conv::{run_float, FloatKernel};
use crate::cpu::matmul::GemmScalar;
use crate::cpu::pool::{self, PoolGeom};
use crate::{Error, Float, Pool2dParams, Result, Tensor};

fn out_shape(input: &[usize], g: &PoolGeom) -> [usize; 4] {
    [input[0], input[1], g.oh, g.ow]
}

fn check_grad_out(op: &'static str, grad_out: &Tensor, want: &[usize]) -> Result<()> {
    if grad_out.shape() != want {
        return Err(Error::ShapeMismatch {
            op,
            lhs: grad_out.shape().to_vec(),
            rhs: want.to_vec(),
            hint: "grad_out must have the pooling's output shape".into(),
        });
    }
    Ok(())
}

fn avg_geom(op: &'static str, input: &[usize], p: &Pool2dParams) -> Result<PoolGeom> {
    if p.dilation != [1, 1] {
        return Err(Error::invalid(
            op,
            format!("average pooling has no dilation (got {:?})", p.dilation),
        ));
    }
    PoolGeom::new(op, input, p)
}

/// Checks an NCHW shape and an adaptive output size: `(planes, [h, w])`.
fn adaptive_geom(
    op: &'static str,
    input: &[usize],
    out: [usize; 2],
) -> Result<(usize, [usize; 2])> {
    let &[n, c, h, w] = input else {
        return Err(Error::BadShape {
            op,
            shape: input.to_vec(),
            msg: "the input must be NCHW (rank 4)".into(),
        });
    };
    if h == 0 || w == 0 || out.contains(&0) {
        return Err(Error::BadShape {
            op,
            shape: input.to_vec(),
            msg: format!("cannot pool a {h}x{w} plane to {}x{}", out[0], out[1]),
        });
    }
    Ok((n * c, [h, w]))
}

enum Kind {
    Max,
    MaxBackward,
    MaxBackwardMasked(f64),
    Avg,
    AvgBackward,
    Adaptive(usize, [usize; 2], [usize; 2]),
    AdaptiveBackward(usize, [usize; 2], [usize; 2]),
}

struct Pool<'a>(Kind, Option<&'a PoolGeom>);

impl FloatKernel for Pool<'_> {
    fn run<T: GemmScalar + Float>(&self, i: &[&[T]]) -> Result<Vec<T>> {
        let geom = || {
            self.1
                .ok_or_else(|| Error::invalid("pool2d", "missing geometry"))
        };
        match self.0 {
            Kind::Max => pool::max_pool2d(i[0], geom()?),
            Kind::MaxBackward => pool::max_pool2d_backward(i[0], i[1], geom()?),
            Kind::MaxBackwardMasked(t) => {
                pool::max_pool2d_backward_masked(i[0], i[1], geom()?, Some(T::from_f64(t)))
            }
            Kind::Avg => pool::avg_pool2d(i[0], geom()?),
            Kind::AvgBackward => pool::avg_pool2d_backward(i[0], geom()?),
            Kind::Adaptive(planes, hw, out) => pool::adaptive_avg_pool2d(i[0], planes, hw, out),
            Kind::AdaptiveBackward(planes, hw, out) => {
                pool::adaptive_avg_pool2d_backward(i[0], planes, hw, out)
            }
        }
    }
}

impl Tensor {
    /// Max pooling over an NCHW tensor: window, stride, padding (counts as -inf), dilation and
    /// `ceil_mode` from `p`. NaN propagates. Float dtypes.
    ///
    /// ```
    /// use tandem_tensor::{Pool2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d(&Pool2dParams::square(2, 2, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(&self, p: &Pool2dParams) -> Result<Tensor> {
        let g = PoolGeom::new("max_pool2d", self.shape(), p)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let shape = out_shape(self.shape(), &g);
            return crate::cuda::pool(
                "max_pool2d",
                crate::cuda::PoolKind::Max,
                &[self],
                &g,
                &shape,
            );
        }
        run_float(
            "max_pool2d",
            &[self],
            &out_shape(self.shape(), &g),
            &Pool(Kind::Max, Some(&g)),
        )
    }

    /// Gradient of [`Tensor::max_pool2d`]: each output gradient goes to the position of its
    /// window's maximum (the first one on ties, as in PyTorch), recomputed from `input`;
    /// gradients of overlapping windows add up.
    pub fn max_pool2d_backward(
        grad_out: &Tensor,
        input: &Tensor,
        p: &Pool2dParams,
    ) -> Result<Tensor> {
        Tensor::max_backward(grad_out, input, p, None)
    }

    /// `max_pool2d_backward(grad_out, input) * cast(input > threshold)` in one pass: the
    /// gradient of max pooling followed by relu's gradient mask, where `input` is the relu's
    /// output (relu's mask `cast(y > 0)` reads its input or, the same values, its output).
    /// The numbers of the two ops one after the other (`d * 1` or `d * 0` per element), which
    /// CUDA tensors run.
    ///
    /// ```
    /// use tandem_tensor::{Pool2dParams, Tensor};
    /// let x = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], &[2, 1, 2, 2])
    ///     .unwrap();
    /// let g = Tensor::from_vec(vec![5.0f32, 7.0], &[2, 1, 1, 1]).unwrap();
    /// let p = Pool2dParams::square(2, 2, 0);
    /// let d = Tensor::max_pool2d_backward_masked(&g, &x, &p, 0.0).unwrap();
    /// // The first window's maximum is 0: relu's gradient is zero there.
    /// assert_eq!(d.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0]);
    /// ```
    pub fn max_pool2d_backward_masked(
        grad_out: &Tensor,
        input: &Tensor,
        p: &Pool2dParams,
        threshold: f64,
    ) -> Result<Tensor> {
        Tensor::max_backward(grad_out, input, p, Some(threshold))
    }

    /// The max-pooling gradient, masked by `cast(input > threshold)` when one is given.
    fn max_backward(
        grad_out: &Tensor,
        input: &Tensor,
        p: &Pool2dParams,
        threshold: Option<f64>,
    ) -> Result<Tensor> {
        let op = "max_pool2d_backward";
        let g = PoolGeom::new(op, input.shape(), p)?;
        check_grad_out(op, grad_out, &out_shape(input.shape(), &g))?;
        #[cfg(feature = "cuda")]
        if grad_out.device().is_cuda() || input.device().is_cuda() {
            let kind = crate::cuda::PoolKind::MaxBackward;
            let d = crate::cuda::pool(op, kind, &[grad_out, input], &g, input.shape())?;
            let Some(t) = threshold else {
                return Ok(d);
            };
            let mask = input
                .scalar_op(crate::BinaryOp::Gt, t, false)?
                .cast(d.dtype())?;
            return d.mul(&mask);
        }
        let kind = match threshold {
            Some(t) => Kind::MaxBackwardMasked(t),
            None => Kind::MaxBackward,
        };
        run_float(op, &[grad_out, input], input.shape(), &Pool(kind, Some(&g)))
    }

    /// Average pooling over an NCHW tensor with zero padding. The divisor is the window size
    /// clipped to the padded input (`count_include_pad = true`, PyTorch's default) or the
    /// number of input elements in the window. `p.dilation` must be `[1, 1]`.
    ///
    /// ```
    /// use tandem_tensor::{Pool2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let y = x.avg_pool2d(&Pool2dParams::square(2, 2, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
    /// ```
    pub fn avg_pool2d(&self, p: &Pool2dParams) -> Result<Tensor> {
        let g = avg_geom("avg_pool2d", self.shape(), p)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            let shape = out_shape(self.shape(), &g);
            return crate::cuda::pool(
                "avg_pool2d",
                crate::cuda::PoolKind::Avg,
                &[self],
                &g,
                &shape,
            );
        }
        run_float(
            "avg_pool2d",
            &[self],
            &out_shape(self.shape(), &g),
            &Pool(Kind::Avg, Some(&g)),
        )
    }

    /// Gradient of [`Tensor::avg_pool2d`] for an input of `input_shape`.
    pub fn avg_pool2d_backward(
        grad_out: &Tensor,
        input_shape: &[usize],
        p: &Pool2dParams,
    ) -> Result<Tensor> {
        let op = "avg_pool2d_backward";
        let g = avg_geom(op, input_shape, p)?;
        check_grad_out(op, grad_out, &out_shape(input_shape, &g))?;
        #[cfg(feature = "cuda")]
        if grad_out.device().is_cuda() {
            let kind = crate::cuda::PoolKind::AvgBackward;
            return crate::cuda::pool(op, kind, &[grad_out], &g, input_shape);
        }
        run_float(
            op,
            &[grad_out],
            input_shape,
            &Pool(Kind::AvgBackward, Some(&g)),
        )
    }

    /// Adaptive average pooling of an NCHW tensor to `out = [oh, ow]`: output cell `i` averages
    /// inputs `floor(i*H/oh) .. ceil((i+1)*H/oh)` (and the same across the width).
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec((0..6).map(|v| v as f64).collect(), &[1, 1, 2, 3]).unwrap();
    /// let y = x.adaptive_avg_pool2d([1, 2]).unwrap();
    /// assert_eq!(y.to_vec::<f64>().unwrap(), vec![2.0, 3.0]);
    /// ```
    pub fn adaptive_avg_pool2d(&self, out: [usize; 2]) -> Result<Tensor> {
        let op = "adaptive_avg_pool2d";
        let (planes, hw) = adaptive_geom(op, self.shape(), out)?;
        let shape = [self.shape()[0], self.shape()[1], out[0], out[1]];
        run_float(
            op,
            &[self],
            &shape,
            &Pool(Kind::Adaptive(planes, hw, out), None),
        )
    }

    /// Gradient of [`Tensor::adaptive_avg_pool2d`] for an input of `input_shape`; the output
    /// size is read from `grad_out`.
    pub fn adaptive_avg_pool2d_backward(
        grad_out: &Tensor,
        input_shape: &[usize],
    ) -> Result<Tensor> {
        let op = "adaptive_avg_pool2d_backward";
        let &[_, _, oh, ow] = grad_out.shape() else {
            return Err(Error::BadShape {
                op,
                shape: grad_out.shape().to_vec(),
                msg: "grad_out must be NCHW (rank 4)".into(),
            });
        };
        let (planes, hw) = adaptive_geom(op, input_shape, [oh, ow])?;
        check_grad_out(op, grad_out, &[input_shape[0], input_shape[1], oh, ow])?;
        let kind = Kind::AdaptiveBackward(planes, hw, [oh, ow]);
        run_float(op, &[grad_out], input_shape, &Pool(kind, None))
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Pool2dParams, Tensor};
    use proptest::prelude::*;

    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed ^ 0x2545f4914f6cdd1d;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Few distinct values, so that windows have ties.
                ((s >> 40) % 7) as f64 - 3.0
            })
            .collect()
    }

    /// Naive references over `planes` planes of `h x w`: (max, max grad, avg, avg grad).
    struct Refs {
        max: Vec<f64>,
        dmax: Vec<f64>,
        avg: Vec<f64>,
        davg: Vec<f64>,
    }

    fn reference(
        x: &[f64],
        gy: &[f64],
        planes: usize,
        [h, w]: [usize; 2],
        p: &Pool2dParams,
    ) -> Refs {
        let [oh, ow] = p.out_size([h, w]).unwrap();
        let mut r = Refs {
            max: vec![],
            dmax: vec![0.0; x.len()],
            avg: vec![],
            davg: vec![0.0; x.len()],
        };
        for pl in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = gy[(pl * oh + oy) * ow + ox];
                    // Max over dilated taps inside the input; first max wins.
                    let (mut best, mut at) = (f64::NEG_INFINITY, None);
                    for ki in 0..p.kernel[0] {
                        for kj in 0..p.kernel[1] {
                            let iy = (oy * p.stride[0] + ki * p.dilation[0]) as isize
                                - p.padding[0] as isize;
                            let ix = (ox * p.stride[1] + kj * p.dilation[1]) as isize
                                - p.padding[1] as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let i = (pl * h + iy as usize) * w + ix as usize;
                                if at.is_none() || x[i] > best {
                                    best = x[i];
                                    at = Some(i);
                                }
                            }
                        }
                    }
                    r.max.push(best);
                    if let Some(at) = at {
                        r.dmax[at] += g;
                    }
                    // Average (dilation 1) with PyTorch's divisor.
                    let y0 = (oy * p.stride[0]) as isize - p.padding[0] as isize;
                    let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                    let y1 = (y0 + p.kernel[0] as isize).min((h + p.padding[0]) as isize);
                    let x1 = (x0 + p.kernel[1] as isize).min((w + p.padding[1]) as isize);
                    let mut cells = vec![];
                    for iy in y0.max(0)..y1.min(h as isize) {
                        for ix in x0.max(0)..x1.min(w as isize) {
                            cells.push((pl * h + iy as usize) * w + ix as usize);
                        }
                    }
                    let div = if p.count_include_pad {
                        ((y1 - y0) * (x1 - x0)) as f64
                    } else {
                        cells.len() as f64
                    };
                    r.avg.push(cells.iter().map(|&i| x[i]).sum::<f64>() / div);
                    for &i in &cells {
                        r.davg[i] += g / div;
                    }
                }
            }
        }
        r
    }

    fn close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
        let g = got.to_f64_vec().unwrap();
        assert_eq!(g.len(), want.len(), "{what}");
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            assert!(
                a == b || (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    fn params() -> impl Strategy<Value = Pool2dParams> {
        (
            (1usize..5, 1usize..5),
            (1usize..4, 1usize..4),
            (0usize..3, 0usize..3),
            (1usize..3, 1usize..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |((kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil_mode, count_include_pad)| {
                    Pool2dParams {
                        kernel: [kh, kw],
                        stride: [sh, sw],
                        padding: [ph.min(kh / 2), pw.min(kw / 2)],
                        dilation: [dh, dw],
                        ceil_mode,
                        count_include_pad,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn pooling_matches_reference(p in params(), n in 1usize..3, c in 1usize..3, h in 1usize..12, w in 1usize..12, seed in any::<u64>(), transposed in any::<bool>()) {
            prop_assume!(p.out_size([h, w]).is_some());
            let [oh, ow] = p.out_size([h, w]).unwrap();
            let xv = values(seed, n * c * h * w);
            let gv = values(seed + 1, n * c * oh * ow);
            let want_max = reference(&xv, &gv, n * c, [h, w], &p);
            let avg_p = Pool2dParams { dilation: [1, 1], ..p };
            let avg_ok = avg_p.out_size([h, w]).is_some();
            let want_avg = if avg_ok { Some(reference(&xv, &values(seed + 1, n * c * avg_p.out_size([h, w]).unwrap().iter().product::<usize>()), n * c, [h, w], &avg_p)) } else { None };
            for dtype in [DType::F32, DType::F64] {
                let base = Tensor::from_vec(xv.clone(), &[n, c, h, w]).unwrap().cast(dtype).unwrap();
                // Also a non-contiguous view with the same values: a transposed copy, transposed back.
                let x = if transposed { base.transpose(2, 3).unwrap().contiguous().unwrap().transpose(2, 3).unwrap() } else { base };
                let gy = Tensor::from_vec(gv.clone(), &[n, c, oh, ow]).unwrap().cast(dtype).unwrap();
                close(&x.max_pool2d(&p).unwrap(), &want_max.max, 1e-6, "max");
                close(&Tensor::max_pool2d_backward(&gy, &x, &p).unwrap(), &want_max.dmax, 1e-6, "dmax");
                if let Some(want) = &want_avg {
                    let [ah, aw] = avg_p.out_size([h, w]).unwrap();
                    let ga = Tensor::from_vec(values(seed + 1, n * c * ah * aw), &[n, c, ah, aw]).unwrap().cast(dtype).unwrap();
                    close(&x.avg_pool2d(&avg_p).unwrap(), &want.avg, 1e-6, "avg");
                    close(&Tensor::avg_pool2d_backward(&ga, &[n, c, h, w], &avg_p).unwrap(), &want.davg, 1e-6, "davg");
                }
            }
        }

        #[test]
        fn adaptive_matches_reference(h in 1usize..13, w in 1usize..13, oh in 1usize..8, ow in 1usize..8, seed in any::<u64>()) {
            let xv = values(seed, 2 * h * w);
            let gv = values(seed + 1, 2 * oh * ow);
            let mut want = vec![];
            let mut dwant = vec![0.0; xv.len()];
            for pl in 0..2 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (y0, y1) = ((oy * h) / oh, ((oy + 1) * h).div_ceil(oh));
                        let (x0, x1) = ((ox * w) / ow, ((ox + 1) * w).div_ceil(ow));
                        let idx: Vec<usize> = (y0..y1).flat_map(|y| (x0..x1).map(move |x| (pl * h + y) * w + x)).collect();
                        want.push(idx.iter().map(|&i| xv[i]).sum::<f64>() / idx.len() as f64);
                        for &i in &idx {
                            dwant[i] += gv[(pl * oh + oy) * ow + ox] / idx.len() as f64;
                        }
                    }
                }
            }
            let x = Tensor::from_vec(xv, &[1, 2, h, w]).unwrap();
            close(&x.adaptive_avg_pool2d([oh, ow]).unwrap(), &want, 1e-12, "adaptive");
            let g = Tensor::from_vec(gv, &[1, 2, oh, ow]).unwrap();
            close(&Tensor::adaptive_avg_pool2d_backward(&g, &[1, 2, h, w]).unwrap(), &dwant, 1e-12, "dadaptive");
        }
    }

    #[test]
    fn large_parallel_and_fast_paths() {
        // 2x2/2 fast path over enough planes to run in parallel; odd sizes use the general path.
        for (h, w) in [(28, 28), (29, 17)] {
            let (n, c) = (16, 8);
            let p = Pool2dParams::square(2, 2, 0);
            let [oh, ow] = p.out_size([h, w]).unwrap();
            let xv = values(7, n * c * h * w);
            let gv = values(8, n * c * oh * ow);
            let want = reference(&xv, &gv, n * c, [h, w], &p);
            let x =
                Tensor::from_vec(xv.iter().map(|&v| v as f32).collect(), &[n, c, h, w]).unwrap();
            let gy =
                Tensor::from_vec(gv.iter().map(|&v| v as f32).collect(), &[n, c, oh, ow]).unwrap();
            close(&x.max_pool2d(&p).unwrap(), &want.max, 1e-6, "max");
            close(
                &Tensor::max_pool2d_backward(&gy, &x, &p).unwrap(),
                &want.dmax,
                1e-6,
                "dmax",
            );
            close(&x.avg_pool2d(&p).unwrap(), &want.avg, 1e-6, "avg");
            close(
                &Tensor::avg_pool2d_backward(&gy, &[n, c, h, w], &p).unwrap(),
                &want.davg,
                1e-6,
                "davg",
            );
        }
    }

    #[test]
    fn nan_propagates_and_half_types_work() {
        let x = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 2.0], &[1, 1, 2, 2]).unwrap();
        assert!(x
            .max_pool2d(&Pool2dParams::square(2, 2, 0))
            .unwrap()
            .item()
            .unwrap()
            .is_nan());
        let h = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[1, 1, 2, 2])
            .unwrap()
            .cast(DType::F16)
            .unwrap();
        let y = h.max_pool2d(&Pool2dParams::square(2, 2, 0)).unwrap();
        assert_eq!((y.dtype(), y.item().unwrap()), (DType::F16, 5.0));
        let b = h
            .cast(DType::BF16)
            .unwrap()
            .avg_pool2d(&Pool2dParams::square(2, 2, 0))
            .unwrap();
        assert_eq!((b.dtype(), b.item().unwrap()), (DType::BF16, 2.75));
    }

    #[test]
    fn errors() {
        let x = Tensor::zeros(&[1, 2, 3, 3], DType::F32);
        let e = x
            .max_pool2d(&Pool2dParams::square(4, 1, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bigger than the input") && e.contains("[1, 2, 3, 3]"),
            "{e}"
        );
        assert!(Tensor::zeros(&[2, 3, 3], DType::F32)
            .max_pool2d(&Pool2dParams::square(2, 2, 0))
            .is_err());
        assert!(x
            .avg_pool2d(&Pool2dParams::square(3, 1, 2))
            .unwrap_err()
            .to_string()
            .contains("half"));
        let dil = Pool2dParams {
            dilation: [2, 2],
            ..Pool2dParams::square(2, 1, 0)
        };
        assert!(x
            .avg_pool2d(&dil)
            .unwrap_err()
            .to_string()
            .contains("dilation"));
        assert!(Tensor::zeros(&[1, 2, 3, 3], DType::I64)
            .max_pool2d(&Pool2dParams::square(2, 2, 0))
            .is_err());
        let e = Tensor::max_pool2d_backward(
            &Tensor::zeros(&[1, 2, 2, 2], DType::F32),
            &x,
            &Pool2dParams::square(2, 2, 0),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[1, 2, 2, 2]") && e.contains("[1, 2, 1, 1]"),
            "{e}"
        );
        assert!(x.adaptive_avg_pool2d([0, 2]).is_err());
        assert!(Tensor::adaptive_avg_pool2d_backward(
            &Tensor::zeros(&[1, 3, 2, 2], DType::F32),
            &[1, 2, 3, 3]
        )
        .is_err());
        assert!(Tensor::avg_pool2d_backward(
            &Tensor::zeros(&[1, 2, 2], DType::F32),
            &[1, 2, 3, 3],
            &Pool2dParams::square(2, 2, 0)
        )
        .is_err());
    }

    /// `max_pool2d_backward_masked` is the pooling gradient times `cast(x > t)`, bit for bit:
    /// 2x2 windows (f32 and f64), overlapping padded windows (gradients that add up), a NaN in
    /// the input and in the gradient, zeros and negative values, two thresholds.
    #[test]
    fn masked_backward_is_the_pool_gradient_times_the_mask() {
        let bits = crate::ops::bits;
        let cases = [
            ([3usize, 4, 8, 10], Pool2dParams::square(2, 2, 0)),
            ([2, 3, 7, 9], Pool2dParams::square(3, 2, 1)),
            ([2, 3, 6, 6], Pool2dParams::square(2, 1, 0)),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (shape, p) in &cases {
                let n: usize = shape.iter().product();
                // Relu outputs: many zeros, a NaN, no negatives; ties in many windows.
                let mut xv: Vec<f64> = values(1, n).iter().map(|v| v.max(0.0)).collect();
                xv[5] = f64::NAN;
                let x = Tensor::from_vec(xv, shape).unwrap().cast(dtype).unwrap();
                let y = x.max_pool2d(p).unwrap();
                let mut gv = values(2, y.numel());
                gv[3] = f64::NAN;
                gv[4] = -0.0;
                let g = Tensor::from_vec(gv, y.shape())
                    .unwrap()
                    .cast(dtype)
                    .unwrap();
                for t in [0.0, 0.25] {
                    let d = Tensor::max_pool2d_backward(&g, &x, p).unwrap();
                    let mask = x
                        .scalar_op(crate::BinaryOp::Gt, t, false)
                        .unwrap()
                        .cast(dtype)
                        .unwrap();
                    let want = d.mul(&mask).unwrap();
                    let got = Tensor::max_pool2d_backward_masked(&g, &x, p, t).unwrap();
                    assert_eq!(got.dtype(), dtype);
                    assert_eq!(bits(&got), bits(&want), "{dtype} {shape:?} {p:?} t={t}");
                }
            }
        }
        // A gradient of the wrong shape: the pooling gradient's error.
        let x = Tensor::zeros(&[1, 2, 4, 4], DType::F32);
        let e = Tensor::max_pool2d_backward_masked(
            &Tensor::zeros(&[1, 2, 3, 3], DType::F32),
            &x,
            &Pool2dParams::square(2, 2, 0),
            0.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_pool2d_backward") && e.contains("[1, 2, 2, 2]"),
            "{e}"
        );
    }
}
