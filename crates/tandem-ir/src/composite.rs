//! Composite ops: decompositions into primitives, written once over [`Emit`] for every mode.
//! Their gradients follow from the primitives' rules.

use crate::emit::{Emit, EmitExt};
use crate::op::{Distribution, Op};
use tandem_tensor::{BinaryOp, DType, Error, Result, UnaryOp};

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Keep per-element losses.
    None,
    /// Average (the PyTorch default).
    #[default]
    Mean,
    /// Sum.
    Sum,
}

impl Reduction {
    /// Parses `none`, `mean` or `sum`.
    pub fn parse(s: &str) -> Option<Reduction> {
        match s {
            "none" => Some(Reduction::None),
            "mean" => Some(Reduction::Mean),
            "sum" => Some(Reduction::Sum),
            _ => None,
        }
    }
}

/// Options of [`Functional::cross_entropy`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// Reduction over samples.
    pub reduction: Reduction,
    /// Label smoothing epsilon in `[0, 1]`.
    pub label_smoothing: f64,
    /// Target value that contributes nothing (and is not counted by `Mean`).
    pub ignore_index: i64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
            ignore_index: -100,
        }
    }
}

/// Outputs of [`Functional::batch_norm`].
pub struct BatchNormOutput<V> {
    /// The normalized output.
    pub output: V,
    /// Updated running mean and variance (training mode with running stats only).
    pub running: Option<(V, V)>,
}

/// [`Emit::affine`] as its ops: `transpose(w)`, `matmul`, then `add` of the bias.
pub fn linear_ops<E: Emit + ?Sized>(
    e: &E,
    x: &E::Value,
    w: &E::Value,
    b: Option<&E::Value>,
) -> Result<E::Value> {
    let wt = e.transpose(w, 0, 1)?;
    let y = e.matmul(x, &wt).map_err(|err| err.context("linear"))?;
    match b {
        Some(b) => e.add(&y, b),
        None => Ok(y),
    }
}

/// Composite (decomposed) ops, available on every [`Emit`].
pub trait Functional: EmitExt {
    /// `torch.matmul`: 1-D operands are promoted (and the added dim removed afterwards).
    fn matmul(&self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value> {
        let (ra, rb) = (self.rank(a), self.rank(b));
        if ra == 0 || rb == 0 {
            return Err(Error::invalid(
                "matmul",
                "both operands need at least one dimension",
            ));
        }
        let a2 = if ra == 1 {
            self.unsqueeze(a, 0)?
        } else {
            a.clone()
        };
        let b2 = if rb == 1 {
            self.unsqueeze(b, 1)?
        } else {
            b.clone()
        };
        let mut y = self.matmul2(&a2, &b2)?;
        if rb == 1 {
            y = self.squeeze(&y, -1)?;
        }
        if ra == 1 {
            y = self.squeeze(&y, if rb == 1 { -1 } else { -2 })?;
        }
        Ok(y)
    }

    /// `F.linear`: `x W^T + b` with W `[out, in]` (through [`Emit::affine`]: the ops, or one
    /// kernel where the emitter runs it).
    fn linear(
        &self,
        x: &Self::Value,
        w: &Self::Value,
        b: Option<&Self::Value>,
    ) -> Result<Self::Value> {
        self.affine(x, w, b)
    }

    /// `F.leaky_relu`.
    fn leaky_relu(&self, x: &Self::Value, slope: f64) -> Result<Self::Value> {
        let pos = self.gt_scalar(x, 0.0)?;
        self.where_(&pos, x, &self.mul_scalar(x, slope)?)
    }

    /// `F.gelu` (exact with erf, or the tanh approximation).
    fn gelu(&self, x: &Self::Value, tanh_approx: bool) -> Result<Self::Value> {
        let inner = if tanh_approx {
            // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            let k = (2.0 / std::f64::consts::PI).sqrt();
            let x3 = self.mul(&self.square(x)?, x)?;
            let t = self.add(x, &self.mul_scalar(&x3, 0.044715)?)?;
            self.tanh(&self.mul_scalar(&t, k)?)?
        } else {
            // 0.5 x (1 + erf(x / sqrt 2))
            self.unary(
                UnaryOp::Erf,
                &self.mul_scalar(x, std::f64::consts::FRAC_1_SQRT_2)?,
            )?
        };
        self.mul(&self.mul_scalar(x, 0.5)?, &self.add_scalar(&inner, 1.0)?)
    }

    /// `F.softplus`: `log(1 + exp(beta x)) / beta`, and `x` where `beta x > threshold`.
    fn softplus(&self, x: &Self::Value, beta: f64, threshold: f64) -> Result<Self::Value> {
        let bx = self.mul_scalar(x, beta)?;
        // Stable form: max(z, 0) + log1p(exp(-|z|)).
        let neg_abs = self.neg(&self.abs(&bx)?)?;
        let soft = self.add(
            &self.relu(&bx)?,
            &self.unary(UnaryOp::Log1p, &self.exp(&neg_abs)?)?,
        )?;
        let soft = self.mul_scalar(&soft, 1.0 / beta)?;
        let linear = self.gt_scalar(&bx, threshold)?;
        self.where_(&linear, x, &soft)
    }

    /// `F.silu`: `x * sigmoid(x)`.
    fn silu(&self, x: &Self::Value) -> Result<Self::Value> {
        self.mul(x, &self.sigmoid(x)?)
    }

    /// `F.elu`: `x` for positive inputs, `alpha (e^x - 1)` otherwise.
    fn elu(&self, x: &Self::Value, alpha: f64) -> Result<Self::Value> {
        let pos = self.gt_scalar(x, 0.0)?;
        let neg = self.mul_scalar(&self.unary(UnaryOp::Expm1, x)?, alpha)?;
        self.where_(&pos, x, &neg)
    }

    /// `torch.logsumexp` over axes (empty = all), stable (shifted by the max).
    fn logsumexp(&self, x: &Self::Value, axes: &[isize], keepdim: bool) -> Result<Self::Value> {
        let m = self.emit(Op::StopGradient, &[&self.max(x, axes, true)?])?;
        // An all -inf slice has max -inf: shift by 0 there to avoid inf - inf.
        let finite = self.scalar(BinaryOp::Gt, &self.abs(&m)?, f64::MAX, false)?;
        let m = self.where_(&finite, &self.zeros_like(&m)?, &m)?;
        let s = self.sum(&self.exp(&self.sub(x, &m)?)?, axes, true)?;
        let y = self.add(&self.log(&s)?, &m)?;
        if keepdim {
            return Ok(y);
        }
        let r = self.rank(x);
        let mut axes_u: Vec<usize> = if axes.is_empty() {
            (0..r).collect()
        } else {
            axes.iter()
                .map(|&a| tandem_tensor::layout::normalize_axis("logsumexp", a, r))
                .collect::<Result<_>>()?
        };
        axes_u.sort_unstable();
        let mut y = y;
        for &a in axes_u.iter().rev() {
            y = self.squeeze(&y, a as isize)?;
        }
        Ok(y)
    }

    /// `torch.clamp` with optional bounds.
    fn clamp(&self, x: &Self::Value, min: Option<f64>, max: Option<f64>) -> Result<Self::Value> {
        let mut y = x.clone();
        if let Some(lo) = min {
            y = self.scalar(BinaryOp::Maximum, &y, lo, false)?;
        }
        if let Some(hi) = max {
            y = self.scalar(BinaryOp::Minimum, &y, hi, false)?;
        }
        Ok(y)
    }

    /// `x.masked_fill(mask, value)`.
    fn masked_fill(&self, x: &Self::Value, mask: &Self::Value, value: f64) -> Result<Self::Value> {
        let v = self.full_like(x, value, None)?;
        self.where_(mask, &v, x)
    }

    /// Variance over axes (`unbiased` divides by n-1).
    fn var(
        &self,
        x: &Self::Value,
        axes: &[isize],
        unbiased: bool,
        keepdim: bool,
    ) -> Result<Self::Value> {
        let m = self.mean(x, axes, true)?;
        let d = self.square(&self.sub(x, &m)?)?;
        if !unbiased {
            return self.mean(&d, axes, keepdim);
        }
        let s = self.sum(&d, axes, keepdim)?;
        let axes_u: Vec<usize> = if axes.is_empty() {
            (0..self.rank(x)).collect()
        } else {
            axes.iter()
                .map(|&a| tandem_tensor::layout::normalize_axis("var", a, self.rank(x)))
                .collect::<Result<_>>()?
        };
        let n = self.dim_size(x, &axes_u, self.dtype(x))?;
        self.div(&s, &self.add_scalar(&n, -1.0)?)
    }

    /// Applies a reduction to per-element losses.
    fn reduce_loss(&self, l: &Self::Value, reduction: Reduction) -> Result<Self::Value> {
        match reduction {
            Reduction::None => Ok(l.clone()),
            Reduction::Mean => self.mean(l, &[], false),
            Reduction::Sum => self.sum(l, &[], false),
        }
    }

    /// `F.mse_loss`.
    fn mse_loss(
        &self,
        x: &Self::Value,
        y: &Self::Value,
        reduction: Reduction,
    ) -> Result<Self::Value> {
        let d = self.sub(x, y).map_err(|e| e.context("mse_loss"))?;
        self.reduce_loss(&self.square(&d)?, reduction)
    }

    /// `F.l1_loss`.
    fn l1_loss(
        &self,
        x: &Self::Value,
        y: &Self::Value,
        reduction: Reduction,
    ) -> Result<Self::Value> {
        let d = self.sub(x, y).map_err(|e| e.context("l1_loss"))?;
        self.reduce_loss(&self.abs(&d)?, reduction)
    }

    /// `F.binary_cross_entropy_with_logits`: `max(x,0) - x y + log(1 + exp(-|x|))`.
    fn binary_cross_entropy_with_logits(
        &self,
        x: &Self::Value,
        y: &Self::Value,
        reduction: Reduction,
    ) -> Result<Self::Value> {
        let xy = self
            .mul(x, y)
            .map_err(|e| e.context("binary_cross_entropy_with_logits"))?;
        let sp = self.unary(UnaryOp::Log1p, &self.exp(&self.neg(&self.abs(x)?)?)?)?;
        let l = self.add(&self.sub(&self.relu(x)?, &xy)?, &sp)?;
        self.reduce_loss(&l, reduction)
    }

    /// `F.smooth_l1_loss` (`huber = false`, threshold `beta`) or `F.huber_loss` (`huber = true`,
    /// threshold `delta`).
    fn smooth_l1_loss(
        &self,
        x: &Self::Value,
        y: &Self::Value,
        reduction: Reduction,
        beta: f64,
        huber: bool,
    ) -> Result<Self::Value> {
        let d = self.abs(&self.sub(x, y).map_err(|e| e.context("smooth_l1_loss"))?)?;
        let small = self.scalar(BinaryOp::Lt, &d, beta, false)?;
        let quad = self.mul_scalar(&self.square(&d)?, if huber { 0.5 } else { 0.5 / beta })?;
        let lin = self.add_scalar(&d, -0.5 * beta)?;
        let lin = if huber {
            self.mul_scalar(&lin, beta)?
        } else {
            lin
        };
        self.reduce_loss(&self.where_(&small, &quad, &lin)?, reduction)
    }

    /// `F.binary_cross_entropy` on probabilities, with logs clamped at -100 like PyTorch.
    fn binary_cross_entropy(
        &self,
        p: &Self::Value,
        y: &Self::Value,
        reduction: Reduction,
    ) -> Result<Self::Value> {
        let lp = self.clamp(&self.log(p)?, Some(-100.0), None)?;
        let l1p = self.clamp(&self.log(&self.rsub_scalar(p, 1.0)?)?, Some(-100.0), None)?;
        let t = self
            .add(
                &self.mul(y, &lp)?,
                &self.mul(&self.rsub_scalar(y, 1.0)?, &l1p)?,
            )
            .map_err(|e| e.context("binary_cross_entropy"))?;
        self.reduce_loss(&self.neg(&t)?, reduction)
    }

    /// Checks a classification target's dtype and returns it.
    fn check_target(&self, op: &'static str, target: &Self::Value) -> Result<()> {
        let d = self.dtype(target);
        if !matches!(d, DType::I64 | DType::I32) {
            return Err(Error::DTypeMismatch {
                op,
                expected: "int64 class indices as targets".into(),
                got: d,
            });
        }
        Ok(())
    }

    /// Mean over the samples whose target is not `ignore_index`.
    fn mean_over_valid(
        &self,
        per: &Self::Value,
        target: &Self::Value,
        ignore_index: i64,
    ) -> Result<Self::Value> {
        let valid = self.scalar(BinaryOp::Ne, target, ignore_index as f64, false)?;
        let count = self.sum(&self.cast(&valid, self.dtype(per))?, &[], false)?;
        self.div(&self.sum(per, &[], false)?, &count)
    }

    /// `F.cross_entropy` from logits `[N, C, ...]` and int64 targets `[N, ...]`.
    fn cross_entropy(
        &self,
        logits: &Self::Value,
        target: &Self::Value,
        o: CrossEntropyOptions,
    ) -> Result<Self::Value> {
        self.check_target("cross_entropy", target)?;
        if !(0.0..=1.0).contains(&o.label_smoothing) {
            return Err(Error::invalid(
                "cross_entropy",
                format!("label_smoothing {} is outside [0, 1]", o.label_smoothing),
            ));
        }
        let per = self.emit(
            Op::CrossEntropy {
                ignore_index: o.ignore_index,
                label_smoothing: o.label_smoothing,
            },
            &[logits, target],
        )?;
        match o.reduction {
            Reduction::Mean => self.mean_over_valid(&per, target, o.ignore_index),
            r => self.reduce_loss(&per, r),
        }
    }

    /// `F.nll_loss` from log-probabilities `[N, C, ...]` and int64 targets `[N, ...]`.
    fn nll_loss(
        &self,
        logp: &Self::Value,
        target: &Self::Value,
        reduction: Reduction,
        ignore_index: i64,
    ) -> Result<Self::Value> {
        self.check_target("nll_loss", target)?;
        let valid = self.scalar(BinaryOp::Ne, target, ignore_index as f64, false)?;
        let safe = self.where_(&valid, target, &self.zeros_like(target)?)?;
        let class_axis = if self.rank(logp) == 1 { 0 } else { 1 };
        let idx = self.unsqueeze(&safe, class_axis)?;
        let picked = self.squeeze(&self.gather(logp, class_axis, &idx)?, class_axis)?;
        let per = self.mul(&self.neg(&picked)?, &self.cast(&valid, self.dtype(logp))?)?;
        match reduction {
            Reduction::Mean => self.mean_over_valid(&per, target, ignore_index),
            r => self.reduce_loss(&per, r),
        }
    }

    /// `F.layer_norm` over the last `normalized_dims` dims.
    fn layer_norm(
        &self,
        x: &Self::Value,
        normalized_dims: usize,
        weight: Option<&Self::Value>,
        bias: Option<&Self::Value>,
        eps: f64,
    ) -> Result<Self::Value> {
        let r = self.rank(x);
        if normalized_dims == 0 || normalized_dims > r {
            return Err(Error::invalid(
                "layer_norm",
                format!("cannot normalize {normalized_dims} dims of a rank-{r} tensor"),
            ));
        }
        let axes: Vec<isize> = (r - normalized_dims..r).map(|a| a as isize).collect();
        let m = self.mean(x, &axes, true)?;
        let xc = self.sub(x, &m)?;
        let v = self.mean(&self.square(&xc)?, &axes, true)?;
        let mut y = self.mul(&xc, &self.rsqrt(&self.add_scalar(&v, eps)?)?)?;
        if let Some(w) = weight {
            y = self
                .mul(&y, w)
                .map_err(|e| e.context("layer_norm weight"))?;
        }
        if let Some(b) = bias {
            y = self.add(&y, b).map_err(|e| e.context("layer_norm bias"))?;
        }
        Ok(y)
    }

    /// `F.batch_norm` over input `[N, C, ...]`. In training mode the batch statistics normalize
    /// (biased variance) and, when running stats are given, their update
    /// `(1-momentum) running + momentum batch_stat` (unbiased variance) is returned.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm(
        &self,
        x: &Self::Value,
        running_mean: Option<&Self::Value>,
        running_var: Option<&Self::Value>,
        weight: Option<&Self::Value>,
        bias: Option<&Self::Value>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<BatchNormOutput<Self::Value>> {
        let r = self.rank(x);
        if r < 2 {
            return Err(Error::invalid(
                "batch_norm",
                format!("input must be [N, C, ...], got rank {r}"),
            ));
        }
        let axes: Vec<isize> = std::iter::once(0).chain(2..r as isize).collect();
        // Shape [1, C, 1, ...] for per-channel vectors.
        let mut bshape: Vec<isize> = vec![1; r];
        bshape[1] = -1;
        let per_channel = |v: &Self::Value| self.reshape(v, &bshape);
        let (mean, var, running) = if training {
            let mean = self.mean(x, &axes, true)?;
            let var = self.mean(&self.square(&self.sub(x, &mean)?)?, &axes, true)?;
            let running = match (running_mean, running_var) {
                (Some(rm), Some(rv)) => {
                    let axes_u: Vec<usize> = axes.iter().map(|&a| a as usize).collect();
                    let n = self.dim_size(x, &axes_u, self.dtype(x))?;
                    let unbiased = self.div(&self.mul(&var, &n)?, &self.add_scalar(&n, -1.0)?)?;
                    let bm = self.reshape(&mean, &[-1])?;
                    let bv = self.reshape(&unbiased, &[-1])?;
                    let nm = self.add(
                        &self.mul_scalar(rm, 1.0 - momentum)?,
                        &self.mul_scalar(&bm, momentum)?,
                    )?;
                    let nv = self.add(
                        &self.mul_scalar(rv, 1.0 - momentum)?,
                        &self.mul_scalar(&bv, momentum)?,
                    )?;
                    Some((nm, nv))
                }
                _ => None,
            };
            (mean, var, running)
        } else {
            let (rm, rv) = match (running_mean, running_var) {
                (Some(m), Some(v)) => (m, v),
                _ => {
                    return Err(Error::invalid(
                        "batch_norm",
                        "evaluation mode needs running mean and variance",
                    ))
                }
            };
            (per_channel(rm)?, per_channel(rv)?, None)
        };
        let mut y = self.mul(
            &self.sub(x, &mean)?,
            &self.rsqrt(&self.add_scalar(&var, eps)?)?,
        )?;
        if let Some(w) = weight {
            y = self.mul(&y, &per_channel(w)?)?;
        }
        if let Some(b) = bias {
            y = self.add(&y, &per_channel(b)?)?;
        }
        Ok(BatchNormOutput { output: y, running })
    }

    /// `F.dropout`: zeroes elements with probability `p` and scales the rest by `1/(1-p)` in
    /// training mode; identity otherwise.
    fn dropout(&self, x: &Self::Value, p: f64, training: bool) -> Result<Self::Value> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("probability {p} is outside [0, 1]"),
            ));
        }
        if !training || p == 0.0 {
            return Ok(x.clone());
        }
        if p == 1.0 {
            return self.zeros_like(x);
        }
        let keep = self.random_like(x, Distribution::Bernoulli { p: 1.0 - p })?;
        self.mul(x, &self.mul_scalar(&keep, 1.0 / (1.0 - p))?)
    }

    /// `F.embedding`: rows of `weight` `[V, D]` picked by integer `indices` of any shape.
    fn embedding(&self, indices: &Self::Value, weight: &Self::Value) -> Result<Self::Value> {
        self.check_target("embedding", indices)?;
        let r = self.rank(indices);
        if r == 1 {
            return self.index_select(weight, 0, indices);
        }
        let flat = self.reshape(indices, &[-1])?;
        let rows = self.index_select(weight, 0, &flat)?;
        let d = self
            .dim(weight, 1)
            .ok_or_else(|| Error::invalid("embedding", "embedding width must be known"))?;
        let mut shape: Vec<isize> = (0..r)
            .map(|a| self.dim(indices, a).map_or(-1, |v| v as isize))
            .collect();
        shape.push(d as isize);
        if shape.iter().filter(|&&s| s == -1).count() > 1 {
            return Err(Error::invalid(
                "embedding",
                "at most one unknown index dimension is supported",
            ));
        }
        self.reshape(&rows, &shape)
    }

    /// `F.one_hot` (int64 result like PyTorch unless another dtype is given).
    fn one_hot(&self, indices: &Self::Value, depth: usize, dtype: DType) -> Result<Self::Value> {
        self.emit(
            Op::OneHot {
                depth,
                on: 1.0,
                off: 0.0,
                dtype,
            },
            &[indices],
        )
    }

    /// Adaptive average pooling to `[oh, ow]`.
    fn adaptive_avg_pool2d(&self, x: &Self::Value, out: [usize; 2]) -> Result<Self::Value> {
        self.emit(Op::AdaptiveAvgPool2d(out), &[x])
    }
}

impl<E: Emit + ?Sized> Functional for E {}
