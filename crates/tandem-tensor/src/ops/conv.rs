//! Tensor operations: 2-D convolution and its two gradients.

use crate::cpu::conv::{self, ConvGeom};
use crate::cpu::matmul::GemmScalar;
use crate::{Conv2dParams, DType, Error, Float, Result, Tensor};

/// A kernel over contiguous slices of one float type, run by [`run_float`].
pub(crate) trait FloatKernel {
    /// Computes the output elements from the inputs' elements (same order as given).
    fn run<T: GemmScalar + Float>(&self, inputs: &[&[T]]) -> Result<Vec<T>>;
}

fn typed<T: GemmScalar + Float>(
    op: &'static str,
    inputs: &[&Tensor],
    k: &impl FloatKernel,
) -> Result<Vec<T>> {
    let owned: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.is_contiguous() {
                Ok((*t).clone())
            } else {
                t.copy()
            }
        })
        .collect::<Result<_>>()?;
    let slices: Vec<&[T]> = owned
        .iter()
        .map(|t| {
            t.storage().cpu(op)?;
            t.as_slice::<T>().ok_or(Error::DTypeMismatch {
                op,
                expected: T::DTYPE.name().into(),
                got: t.dtype(),
            })
        })
        .collect::<Result<_>>()?;
    k.run(&slices)
}

/// Runs `k` on the inputs (all of one float dtype, on the CPU) and wraps its result in a tensor
/// of `out_shape`. `f32` and `f64` run natively; `f16` and `bf16` are computed in `f32`.
pub(crate) fn run_float(
    op: &'static str,
    inputs: &[&Tensor],
    out_shape: &[usize],
    k: &impl FloatKernel,
) -> Result<Tensor> {
    let Some(first) = inputs.first() else {
        return Err(Error::invalid(op, "no input"));
    };
    let dtype = first.dtype();
    if !dtype.is_float() {
        return Err(Error::DTypeMismatch {
            op,
            expected: "a float dtype".into(),
            got: dtype,
        });
    }
    if let Some(t) = inputs.iter().find(|t| t.dtype() != dtype) {
        return Err(Error::DTypeMismatch {
            op,
            expected: format!("{dtype} like the first operand"),
            got: t.dtype(),
        });
    }
    match dtype {
        DType::F64 => Tensor::from_vec(typed::<f64>(op, inputs, k)?, out_shape),
        DType::F32 => Tensor::from_vec(typed::<f32>(op, inputs, k)?, out_shape),
        _ => {
            let wide: Vec<Tensor> = inputs
                .iter()
                .map(|t| t.cast(DType::F32))
                .collect::<Result<_>>()?;
            let refs: Vec<&Tensor> = wide.iter().collect();
            Tensor::from_vec(typed::<f32>(op, &refs, k)?, out_shape)?.cast(dtype)
        }
    }
}

/// The forward convolution: geometry, whether a bias is given, whether relu follows.
struct Forward<'a>(&'a ConvGeom, bool, bool);
impl FloatKernel for Forward<'_> {
    fn run<T: GemmScalar + Float>(&self, i: &[&[T]]) -> Result<Vec<T>> {
        let bias = if self.1 { i.get(2).copied() } else { None };
        conv::conv2d_act(i[0], i[1], bias, self.0, self.2)
    }
}

struct InputGrad<'a>(&'a ConvGeom);
impl FloatKernel for InputGrad<'_> {
    fn run<T: GemmScalar + Float>(&self, i: &[&[T]]) -> Result<Vec<T>> {
        conv::conv2d_input_grad(i[0], i[1], self.0)
    }
}

struct WeightGrad<'a>(&'a ConvGeom);
impl FloatKernel for WeightGrad<'_> {
    fn run<T: GemmScalar + Float>(&self, i: &[&[T]]) -> Result<Vec<T>> {
        conv::conv2d_weight_grad(i[0], i[1], self.0)
    }
}

struct WeightBiasGrad<'a>(&'a ConvGeom);
impl FloatKernel for WeightBiasGrad<'_> {
    fn run<T: GemmScalar + Float>(&self, i: &[&[T]]) -> Result<Vec<T>> {
        conv::conv2d_weight_bias_grad(i[0], i[1], self.0)
    }
}

fn check_grad_out(op: &'static str, grad_out: &Tensor, g: &ConvGeom) -> Result<()> {
    let want = g.output_shape();
    if grad_out.shape() != want {
        return Err(Error::ShapeMismatch {
            op,
            lhs: grad_out.shape().to_vec(),
            rhs: want.to_vec(),
            hint: "grad_out must have the convolution's output shape".into(),
        });
    }
    Ok(())
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as in PyTorch) of an NCHW input with a weight
    /// `[O, C/groups, kh, kw]` and an optional bias `[O]`, with stride, zero padding, dilation
    /// and groups from `p`. Float dtypes; all operands of one dtype.
    ///
    /// ```
    /// use tandem_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let w = Tensor::from_vec(vec![1.0f32; 4], &[1, 1, 2, 2]).unwrap();
    /// let p = Conv2dParams { stride: [2, 2], ..Default::default() };
    /// let y = x.conv2d(&w, None, &p).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![10.0, 18.0, 42.0, 50.0]);
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_act(weight, bias, p, false)
    }

    /// `relu(conv2d(x, weight, bias))` in one kernel: each sample's output gets the
    /// activation right after it is computed, while it is still in cache, with the numbers of
    /// the two ops one after the other (CUDA tensors run the two ops).
    ///
    /// ```
    /// use tandem_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0, -4.0], &[1, 1, 2, 2]).unwrap();
    /// let w = Tensor::from_vec(vec![1.0f32], &[1, 1, 1, 1]).unwrap();
    /// let y = x.conv2d_relu(&w, None, &Conv2dParams::default()).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 0.0, 3.0, 0.0]);
    /// ```
    pub fn conv2d_relu(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_act(weight, bias, p, true)
    }

    fn conv2d_act(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: &Conv2dParams,
        relu: bool,
    ) -> Result<Tensor> {
        let g = ConvGeom::new("conv2d", self.shape(), weight.shape(), p)?;
        let mut inputs = vec![self, weight];
        if let Some(b) = bias {
            if b.shape() != [g.o] {
                return Err(Error::ShapeMismatch {
                    op: "conv2d",
                    lhs: b.shape().to_vec(),
                    rhs: weight.shape().to_vec(),
                    hint: format!("the bias must be [{}], one value per output channel", g.o),
                });
            }
            inputs.push(b);
        }
        #[cfg(feature = "cuda")]
        if inputs.iter().any(|t| t.device().is_cuda()) {
            let y = crate::cuda::conv2d(self, weight, bias, &g)?;
            return if relu {
                y.unary(crate::UnaryOp::Relu)
            } else {
                Ok(y)
            };
        }
        if relu && !matches!(self.dtype(), DType::F32 | DType::F64) {
            // Half types compute in f32: the relu runs after the rounding, as the ops do.
            return self
                .conv2d_act(weight, bias, p, false)?
                .unary(crate::UnaryOp::Relu);
        }
        run_float(
            "conv2d",
            &inputs,
            &g.output_shape(),
            &Forward(&g, bias.is_some(), relu),
        )
    }

    /// Gradient of [`Tensor::conv2d`] with respect to its input (a transposed convolution):
    /// `grad_out` `[N, O, oh, ow]` -> `input_shape` `[N, C, H, W]`.
    pub fn conv2d_input_grad(
        grad_out: &Tensor,
        weight: &Tensor,
        input_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        let op = "conv2d_input_grad";
        let g = ConvGeom::new(op, input_shape, weight.shape(), p)?;
        check_grad_out(op, grad_out, &g)?;
        #[cfg(feature = "cuda")]
        if grad_out.device().is_cuda() || weight.device().is_cuda() {
            return crate::cuda::conv2d_input_grad(grad_out, weight, &g, input_shape);
        }
        run_float(op, &[grad_out, weight], input_shape, &InputGrad(&g))
    }

    /// Gradient of [`Tensor::conv2d`] with respect to its weight: the input `[N, C, H, W]` and
    /// `grad_out` `[N, O, oh, ow]` -> `weight_shape` `[O, C/groups, kh, kw]`.
    pub fn conv2d_weight_grad(
        input: &Tensor,
        grad_out: &Tensor,
        weight_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        let op = "conv2d_weight_grad";
        let g = ConvGeom::new(op, input.shape(), weight_shape, p)?;
        check_grad_out(op, grad_out, &g)?;
        #[cfg(feature = "cuda")]
        if input.device().is_cuda() || grad_out.device().is_cuda() {
            return crate::cuda::conv2d_weight_grad(input, grad_out, &g, weight_shape);
        }
        run_float(op, &[input, grad_out], weight_shape, &WeightGrad(&g))
    }

    /// The gradients of [`Tensor::conv2d`] with respect to its weight and its bias, in one
    /// call: `(grad_weight [O, C/groups, kh, kw], grad_bias [O])`, where `grad_bias` is
    /// `grad_out` summed over the batch and the positions. Both are views of one buffer (see
    /// [`Tensor::conv2d_weight_bias_grad_packed`]). On the CPU the stride-1 `f32` kernels take
    /// the bias gradient while they read `grad_out` for the weight gradient.
    ///
    /// ```
    /// use tandem_tensor::{Conv2dParams, Tensor};
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
    /// let gy = Tensor::from_vec(vec![1.0f32; 9], &[1, 1, 3, 3]).unwrap();
    /// let p = Conv2dParams::default();
    /// let (dw, db) = Tensor::conv2d_weight_bias_grad(&x, &gy, &[1, 1, 2, 2], &p).unwrap();
    /// assert_eq!(dw.shape(), &[1, 1, 2, 2]);
    /// assert_eq!(dw.to_vec::<f32>().unwrap(), vec![45.0, 54.0, 81.0, 90.0]);
    /// assert_eq!(db.to_vec::<f32>().unwrap(), vec![9.0]);
    /// ```
    pub fn conv2d_weight_bias_grad(
        input: &Tensor,
        grad_out: &Tensor,
        weight_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<(Tensor, Tensor)> {
        let packed = Tensor::conv2d_weight_bias_grad_packed(input, grad_out, weight_shape, p)?;
        let w_len = crate::layout::numel(weight_shape);
        let end = packed.numel();
        let dw = packed
            .slice(0, 0, w_len as isize, 1)?
            .reshape_to(weight_shape)?;
        let db = packed.slice(0, w_len as isize, end as isize, 1)?;
        Ok((dw, db))
    }

    /// [`Tensor::conv2d_weight_bias_grad`]'s two results in one 1-D tensor of
    /// `O * C/groups * kh * kw + O` elements: the weight gradient, flattened, then the bias
    /// gradient. Graph mode's compiler uses it where a plan computes both gradients of one
    /// convolution from the same output gradient.
    pub fn conv2d_weight_bias_grad_packed(
        input: &Tensor,
        grad_out: &Tensor,
        weight_shape: &[usize],
        p: &Conv2dParams,
    ) -> Result<Tensor> {
        let op = "conv2d_weight_bias_grad";
        let g = ConvGeom::new(op, input.shape(), weight_shape, p)?;
        check_grad_out(op, grad_out, &g)?;
        let len = crate::layout::numel(weight_shape) + g.o;
        #[cfg(feature = "cuda")]
        if input.device().is_cuda() || grad_out.device().is_cuda() {
            let dw = crate::cuda::conv2d_weight_grad(input, grad_out, &g, weight_shape)?;
            let db = grad_out.reduce(crate::ReduceOp::Sum, &[0, 2, 3], false)?;
            let dw_flat = dw.reshape_to(&[len - g.o])?;
            return Tensor::cat(&[&dw_flat, &db], 0);
        }
        run_float(op, &[input, grad_out], &[len], &WeightBiasGrad(&g))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Conv2dParams, DType, Tensor};
    use proptest::prelude::*;

    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed ^ 0x9e3779b97f4a7c15;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Sizes of a random convolution problem.
    #[derive(Debug, Clone)]
    struct Case {
        n: usize,
        cg: usize,
        og: usize,
        groups: usize,
        h: usize,
        w: usize,
        k: [usize; 2],
        p: Conv2dParams,
    }

    impl Case {
        fn input_shape(&self) -> [usize; 4] {
            [self.n, self.cg * self.groups, self.h, self.w]
        }
        fn weight_shape(&self) -> [usize; 4] {
            [self.og * self.groups, self.cg, self.k[0], self.k[1]]
        }
        fn out_hw(&self) -> [usize; 2] {
            self.p.out_size([self.h, self.w], self.k).unwrap()
        }
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            (1usize..4, 1usize..4, 1usize..4, 1usize..4),
            (1usize..10, 1usize..10, 1usize..4, 1usize..4),
            (
                1usize..3,
                1usize..3,
                0usize..3,
                0usize..3,
                1usize..3,
                1usize..3,
            ),
        )
            .prop_map(
                |((n, cg, og, groups), (h, w, kh, kw), (sh, sw, ph, pw, dh, dw))| Case {
                    n,
                    cg,
                    og,
                    groups,
                    h,
                    w,
                    k: [kh, kw],
                    p: Conv2dParams {
                        stride: [sh, sw],
                        padding: [ph, pw],
                        dilation: [dh, dw],
                        groups,
                    },
                },
            )
            .prop_filter("kernel fits", |c| c.p.out_size([c.h, c.w], c.k).is_some())
    }

    /// Direct-loop reference: calls `f(input index, weight index, output index)` for every
    /// product term of the convolution.
    fn visit(c: &Case, mut f: impl FnMut(usize, usize, usize)) {
        let [oh, ow] = c.out_hw();
        let (ci, co) = (c.cg * c.groups, c.og * c.groups);
        for n in 0..c.n {
            for o in 0..co {
                let grp = o / c.og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        for cc in 0..c.cg {
                            for ki in 0..c.k[0] {
                                for kj in 0..c.k[1] {
                                    let iy = (oy * c.p.stride[0] + ki * c.p.dilation[0]) as isize
                                        - c.p.padding[0] as isize;
                                    let ix = (ox * c.p.stride[1] + kj * c.p.dilation[1]) as isize
                                        - c.p.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= c.h || ix as usize >= c.w
                                    {
                                        continue;
                                    }
                                    let x_i = ((n * ci + grp * c.cg + cc) * c.h + iy as usize)
                                        * c.w
                                        + ix as usize;
                                    let w_i = ((o * c.cg + cc) * c.k[0] + ki) * c.k[1] + kj;
                                    let y_i = ((n * co + o) * oh + oy) * ow + ox;
                                    f(x_i, w_i, y_i);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    struct Refs {
        y: Vec<f64>,
        dx: Vec<f64>,
        dw: Vec<f64>,
    }

    fn reference(c: &Case, x: &[f64], w: &[f64], b: &[f64], gy: &[f64]) -> Refs {
        let [oh, ow] = c.out_hw();
        let co = c.og * c.groups;
        let mut y: Vec<f64> = (0..c.n * co * oh * ow)
            .map(|i| b[(i / (oh * ow)) % co])
            .collect();
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        visit(c, |xi, wi, yi| {
            y[yi] += x[xi] * w[wi];
            dx[xi] += gy[yi] * w[wi];
            dw[wi] += gy[yi] * x[xi];
        });
        Refs { y, dx, dw }
    }

    fn close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
        let g = got.to_f64_vec().unwrap();
        assert_eq!(g.len(), want.len(), "{what}");
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        a.to_f64_vec()
            .unwrap()
            .iter()
            .zip(b.to_f64_vec().unwrap())
            .map(|(x, y)| x * y)
            .sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn conv_and_grads_match_direct_reference(c in case(), seed in any::<u64>(), permuted in any::<bool>()) {
            let xs = c.input_shape();
            let ws = c.weight_shape();
            let [oh, ow] = c.out_hw();
            let ys = [c.n, ws[0], oh, ow];
            let xv = values(seed, xs.iter().product());
            let wv = values(seed + 1, ws.iter().product());
            let bv = values(seed + 2, ws[0]);
            let gv = values(seed + 3, ys.iter().product());
            let want = reference(&c, &xv, &wv, &bv, &gv);
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let mk = |v: &[f64], s: &[usize]| Tensor::from_vec(v.to_vec(), s).unwrap().cast(dtype).unwrap();
                // A non-contiguous input: NHWC storage viewed as NCHW.
                let x = if permuted {
                    let nhwc: Vec<f64> = (0..xv.len()).map(|i| {
                        let (n, rest) = (i / (xs[2] * xs[3] * xs[1]), i % (xs[2] * xs[3] * xs[1]));
                        let (hw, ch) = (rest / xs[1], rest % xs[1]);
                        xv[(n * xs[1] + ch) * xs[2] * xs[3] + hw]
                    }).collect();
                    let t = mk(&nhwc, &[xs[0], xs[2], xs[3], xs[1]]).permute(&[0, 3, 1, 2]).unwrap();
                    assert!(!t.is_contiguous() || xs[1] == 1 || xs[2] * xs[3] == 1);
                    t
                } else {
                    mk(&xv, &xs)
                };
                let w = mk(&wv, &ws);
                let b = mk(&bv, &[ws[0]]);
                let gy = mk(&gv, &ys);
                let y = x.conv2d(&w, Some(&b), &c.p).unwrap();
                prop_assert_eq!(y.shape(), &ys[..]);
                close(&y, &want.y, tol, "y");
                let dx = Tensor::conv2d_input_grad(&gy, &w, &xs, &c.p).unwrap();
                close(&dx, &want.dx, tol, "dx");
                let dw = Tensor::conv2d_weight_grad(&x, &gy, &ws, &c.p).unwrap();
                close(&dw, &want.dw, tol, "dw");
            }
        }

        #[test]
        fn adjoint_identities(c in case(), seed in any::<u64>()) {
            // <conv(x, w), g> == <x, input_grad(g, w)> == <w, weight_grad(x, g)>, in f64.
            let xs = c.input_shape();
            let ws = c.weight_shape();
            let [oh, ow] = c.out_hw();
            let ys = [c.n, ws[0], oh, ow];
            let mk = |s: u64, shape: &[usize]| Tensor::from_vec(values(s, shape.iter().product()), shape).unwrap();
            let (x, w, g) = (mk(seed, &xs), mk(seed + 1, &ws), mk(seed + 2, &ys));
            let lhs = dot(&x.conv2d(&w, None, &c.p).unwrap(), &g);
            let via_x = dot(&x, &Tensor::conv2d_input_grad(&g, &w, &xs, &c.p).unwrap());
            let via_w = dot(&w, &Tensor::conv2d_weight_grad(&x, &g, &ws, &c.p).unwrap());
            prop_assert!((lhs - via_x).abs() <= 1e-10 * (1.0 + lhs.abs()), "{} vs {}", lhs, via_x);
            prop_assert!((lhs - via_w).abs() <= 1e-10 * (1.0 + lhs.abs()), "{} vs {}", lhs, via_w);
        }
    }

    #[test]
    fn lenet_sized_and_pointwise_paths() {
        // Batch-parallel paths (LeNet conv1 and conv2 shapes) and the 1x1 shortcut.
        let cases = [
            Case {
                n: 8,
                cg: 1,
                og: 6,
                groups: 1,
                h: 28,
                w: 28,
                k: [5, 5],
                p: Conv2dParams {
                    padding: [2, 2],
                    ..Default::default()
                },
            },
            Case {
                n: 8,
                cg: 6,
                og: 16,
                groups: 1,
                h: 14,
                w: 14,
                k: [5, 5],
                p: Conv2dParams::default(),
            },
            Case {
                n: 5,
                cg: 4,
                og: 3,
                groups: 2,
                h: 9,
                w: 7,
                k: [1, 1],
                p: Conv2dParams {
                    groups: 2,
                    ..Default::default()
                },
            },
            Case {
                n: 1,
                cg: 3,
                og: 4,
                groups: 1,
                h: 40,
                w: 40,
                k: [3, 3],
                p: Conv2dParams {
                    padding: [1, 1],
                    ..Default::default()
                },
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let xs = c.input_shape();
            let ws = c.weight_shape();
            let [oh, ow] = c.out_hw();
            let ys = [c.n, ws[0], oh, ow];
            let (xv, wv, bv, gv) = (
                values(1, xs.iter().product()),
                values(2, ws.iter().product()),
                values(3, ws[0]),
                values(4, ys.iter().product()),
            );
            let want = reference(c, &xv, &wv, &bv, &gv);
            let x = Tensor::from_vec(xv.iter().map(|&v| v as f32).collect(), &xs).unwrap();
            let w = Tensor::from_vec(wv.iter().map(|&v| v as f32).collect(), &ws).unwrap();
            let b = Tensor::from_vec(bv.iter().map(|&v| v as f32).collect(), &[ws[0]]).unwrap();
            let gy = Tensor::from_vec(gv.iter().map(|&v| v as f32).collect(), &ys).unwrap();
            close(
                &x.conv2d(&w, Some(&b), &c.p).unwrap(),
                &want.y,
                1e-5,
                &format!("y{i}"),
            );
            close(
                &Tensor::conv2d_input_grad(&gy, &w, &xs, &c.p).unwrap(),
                &want.dx,
                1e-5,
                &format!("dx{i}"),
            );
            close(
                &Tensor::conv2d_weight_grad(&x, &gy, &ws, &c.p).unwrap(),
                &want.dw,
                1e-5,
                &format!("dw{i}"),
            );
        }
    }

    #[test]
    fn half_precision_goes_through_f32() {
        let x = Tensor::ones(&[1, 2, 3, 3], DType::F16);
        let w = Tensor::ones(&[1, 2, 3, 3], DType::F16);
        let y = x.conv2d(&w, None, &Conv2dParams::default()).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(y.to_f64_vec().unwrap(), vec![18.0]);
        let xb = x.cast(DType::BF16).unwrap();
        let wb = w.cast(DType::BF16).unwrap();
        assert_eq!(
            xb.conv2d(&wb, None, &Conv2dParams::default())
                .unwrap()
                .dtype(),
            DType::BF16
        );
    }

    #[test]
    fn errors() {
        let p = Conv2dParams::default();
        let x = Tensor::zeros(&[2, 3, 8, 8], DType::F32);
        let e = x
            .conv2d(&Tensor::zeros(&[4, 2, 3, 3], DType::F32), None, &p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[2, 3, 8, 8]") && e.contains("[4, 2, 3, 3]"),
            "{e}"
        );
        let g = Conv2dParams { groups: 2, ..p };
        let e = x
            .conv2d(&Tensor::zeros(&[4, 1, 3, 3], DType::F32), None, &g)
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups=2"), "{e}");
        let e = x
            .conv2d(&Tensor::zeros(&[4, 3, 9, 3], DType::F32), None, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller than the dilated kernel"), "{e}");
        assert!(Tensor::zeros(&[3, 8, 8], DType::F32)
            .conv2d(&Tensor::zeros(&[4, 3, 3, 3], DType::F32), None, &p)
            .is_err());
        let w = Tensor::zeros(&[4, 3, 3, 3], DType::F32);
        let e = x
            .conv2d(&w, Some(&Tensor::zeros(&[3], DType::F32)), &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias"), "{e}");
        let e = x
            .conv2d(&w.cast(DType::F64).unwrap(), None, &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("float64"), "{e}");
        let xi = Tensor::zeros(&[2, 3, 8, 8], DType::I64);
        assert!(xi
            .conv2d(&w.cast(DType::I64).unwrap(), None, &p)
            .unwrap_err()
            .to_string()
            .contains("float"));
        let e = Tensor::conv2d_input_grad(
            &Tensor::zeros(&[2, 4, 5, 5], DType::F32),
            &w,
            &[2, 3, 8, 8],
            &p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("[2, 4, 5, 5]") && e.contains("[2, 4, 6, 6]"),
            "{e}"
        );
        assert!(Tensor::conv2d_weight_grad(
            &x,
            &Tensor::zeros(&[2, 4, 6, 7], DType::F32),
            &[4, 3, 3, 3],
            &p
        )
        .is_err());
    }

    /// `conv2d_relu` is the convolution then the relu op, bit for bit: on the direct kernels
    /// (stride 1, f32), on im2col + gemm (stride 2, f64, one sample), without a bias, and for
    /// f16 (computed as the two ops).
    #[test]
    fn conv2d_relu_is_the_two_ops() {
        let bits = crate::ops::bits;
        let stride = |s| Conv2dParams {
            stride: [s, s],
            padding: [1, 1],
            ..Default::default()
        };
        let cases = [
            (
                [4usize, 3, 12, 12],
                [5usize, 3, 3, 3],
                stride(1),
                DType::F32,
            ),
            ([3, 2, 9, 7], [4, 2, 3, 3], stride(2), DType::F32),
            ([1, 2, 9, 7], [4, 2, 3, 3], stride(1), DType::F64),
            ([2, 2, 6, 6], [3, 2, 3, 3], stride(1), DType::F16),
        ];
        for (i, (xs, ws, p, dtype)) in cases.into_iter().enumerate() {
            let t = |shape: &[usize], seed| {
                let n = shape.iter().product();
                Tensor::from_vec(values(seed, n), shape)
                    .unwrap()
                    .cast(dtype)
                    .unwrap()
            };
            let (x, w, b) = (t(&xs, i as u64), t(&ws, 10 + i as u64), t(&ws[..1], 20));
            for bias in [Some(&b), None] {
                let ops = x.conv2d(&w, bias, &p).unwrap();
                let fused = x.conv2d_relu(&w, bias, &p).unwrap();
                let want = ops.unary(crate::UnaryOp::Relu).unwrap();
                assert_eq!(fused.dtype(), dtype);
                assert_eq!(fused.shape(), want.shape());
                assert_eq!(
                    bits(&fused),
                    bits(&want),
                    "case {i}, bias {}",
                    bias.is_some()
                );
                let v = fused.cast(DType::F64).unwrap().to_vec::<f64>().unwrap();
                assert!(v.contains(&0.0) && v.iter().any(|&a| a > 0.0));
            }
        }
        // Errors are the convolution's.
        let x = Tensor::zeros(&[1, 3, 8, 8], DType::F32);
        let e = x
            .conv2d_relu(&Tensor::zeros(&[4, 2, 3, 3], DType::F32), None, &stride(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv2d"), "{e}");
    }

    /// `conv2d_weight_bias_grad` is `conv2d_weight_grad` and `grad_out` summed over
    /// `[0, 2, 3]`: on the direct kernels (LeNet-5's two convolutions, padded, dilated,
    /// grouped, odd sizes; 1 and 2 threads), on im2col + gemm (stride 2, f64) and for f16; the
    /// weight gradient bit for bit where both take the same kernel, the bias gradient within
    /// rounding (it is summed in another order). The packed form holds the same numbers.
    #[test]
    fn weight_bias_grad_is_the_two_gradients() {
        let conv = |stride, padding, dilation, groups| Conv2dParams {
            stride: [stride, stride],
            padding,
            dilation,
            groups,
        };
        let cases = [
            (
                [64usize, 1, 28, 28],
                [6usize, 1, 5, 5],
                conv(1, [2, 2], [1, 1], 1),
                DType::F32,
            ),
            (
                [64, 6, 14, 14],
                [16, 6, 5, 5],
                conv(1, [0, 0], [1, 1], 1),
                DType::F32,
            ),
            (
                [3, 4, 11, 9],
                [6, 2, 3, 2],
                conv(1, [1, 1], [2, 1], 2),
                DType::F32,
            ),
            (
                [5, 3, 7, 19],
                [13, 3, 3, 3],
                conv(1, [1, 0], [1, 1], 1),
                DType::F32,
            ),
            (
                [3, 2, 9, 7],
                [4, 2, 3, 3],
                conv(2, [1, 1], [1, 1], 1),
                DType::F32,
            ),
            (
                [2, 2, 9, 7],
                [4, 2, 3, 3],
                conv(1, [1, 1], [1, 1], 1),
                DType::F64,
            ),
            (
                [2, 2, 6, 6],
                [3, 2, 3, 3],
                conv(1, [1, 1], [1, 1], 1),
                DType::F16,
            ),
        ];
        for (i, (xs, ws, p, dtype)) in cases.into_iter().enumerate() {
            let t = |shape: &[usize], seed| {
                let n = shape.iter().product();
                Tensor::from_vec(values(seed, n), shape)
                    .unwrap()
                    .cast(dtype)
                    .unwrap()
            };
            let x = t(&xs, i as u64);
            let w = t(&ws, 10 + i as u64);
            let gy = t(x.conv2d(&w, None, &p).unwrap().shape(), 30 + i as u64);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let (dw, db) = Tensor::conv2d_weight_bias_grad(&x, &gy, &ws, &p).unwrap();
                    let want_dw = Tensor::conv2d_weight_grad(&x, &gy, &ws, &p).unwrap();
                    let want_db = gy
                        .cast(DType::F64)
                        .unwrap()
                        .reduce(crate::ReduceOp::Sum, &[0, 2, 3], false)
                        .unwrap();
                    assert_eq!((dw.dtype(), db.dtype()), (dtype, dtype));
                    assert_eq!(dw.shape(), &ws[..]);
                    assert_eq!(db.shape(), &ws[..1]);
                    assert_eq!(
                        crate::ops::bits(&dw),
                        crate::ops::bits(&want_dw),
                        "case {i}"
                    );
                    let tol = if dtype == DType::F16 { 1e-2 } else { 1e-5 };
                    let got = db.to_f64_vec().unwrap();
                    let want = want_db.to_vec::<f64>().unwrap();
                    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= tol * (1.0 + b.abs()),
                            "case {i}, {threads} threads, channel {o}: {a} vs {b}"
                        );
                    }
                    let packed = Tensor::conv2d_weight_bias_grad_packed(&x, &gy, &ws, &p).unwrap();
                    assert_eq!(packed.shape(), &[dw.numel() + db.numel()]);
                    let mut both = dw.to_f64_vec().unwrap();
                    both.extend(got);
                    assert_eq!(packed.to_f64_vec().unwrap(), both, "case {i}");
                });
            }
        }
        // Errors name the op and the mismatch.
        let x = Tensor::zeros(&[2, 3, 8, 8], DType::F32);
        let e = Tensor::conv2d_weight_bias_grad(
            &x,
            &Tensor::zeros(&[2, 4, 6, 7], DType::F32),
            &[4, 3, 3, 3],
            &Conv2dParams::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("conv2d_weight_bias_grad") && e.contains("[2, 4, 6, 7]"),
            "{e}"
        );
        let e = Tensor::conv2d_weight_bias_grad(
            &x,
            &Tensor::zeros(&[2, 4, 6, 6], DType::F64),
            &[4, 3, 3, 3],
            &Conv2dParams::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("float64"), "{e}");
    }
}
