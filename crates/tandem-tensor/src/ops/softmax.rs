//! Softmax, log-softmax and cross-entropy from logits (fused kernels).

use crate::cpu::softmax::{self as kernels, SoftmaxFloat};
use crate::{DType, Element, Error, Result, Tensor};

/// The elements of a float tensor as a contiguous slice (copying only if the view is not
/// contiguous), passed to `f`.
fn with_contiguous<F: Element, R>(t: &Tensor, f: impl FnOnce(&[F]) -> R) -> Result<R> {
    if let Some(s) = t.as_slice::<F>() {
        return Ok(f(s));
    }
    let c = t.copy()?;
    let s = c.as_slice::<F>().ok_or(Error::DTypeMismatch {
        op: "softmax",
        expected: F::DTYPE.name().to_string(),
        got: t.dtype(),
    })?;
    Ok(f(s))
}

impl Tensor {
    fn softmax_impl(&self, op: &'static str, axis: usize, log: bool) -> Result<Tensor> {
        let rank = self.rank();
        if axis >= rank.max(1) {
            return Err(Error::BadAxis {
                op,
                axis: axis as isize,
                rank,
            });
        }
        let shape = self.shape();
        let (outer, n, inner) = if rank == 0 {
            (1, 1, 1)
        } else {
            (
                shape[..axis].iter().product(),
                shape[axis],
                shape[axis + 1..].iter().product(),
            )
        };
        fn run<F: SoftmaxFloat>(
            t: &Tensor,
            dims: (usize, usize, usize),
            log: bool,
        ) -> Result<Tensor> {
            let out = with_contiguous(t, |x: &[F]| {
                kernels::softmax(x, dims.0, dims.1, dims.2, log)
            })?;
            Tensor::from_vec(out, t.shape())
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::softmax(self, axis, log);
        }
        self.cpu(op)?;
        match self.dtype() {
            DType::F32 => run::<f32>(self, (outer, n, inner), log),
            DType::F64 => run::<f64>(self, (outer, n, inner), log),
            DType::F16 | DType::BF16 => {
                run::<f32>(&self.cast(DType::F32)?, (outer, n, inner), log)?.cast(self.dtype())
            }
            dtype => Err(Error::UnsupportedDType {
                op,
                dtype,
                device: self.device(),
            }),
        }
    }

    /// Softmax along `axis`: `exp(x - max) / sum(exp(x - max))`, numerically stable (finite
    /// for logits of any finite magnitude), fused into one pass per row for the max, one for
    /// the exponentials and their sum, one to normalize. Float dtypes (`f16`/`bf16` compute in
    /// `f32`). A 0-d tensor accepts axis 0.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0.0f32, 0.0, 1e4, -1e4], &[2, 2]).unwrap();
    /// let p = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
    /// assert_eq!(p, vec![0.5, 0.5, 1.0, 0.0]);
    /// ```
    pub fn softmax(&self, axis: usize) -> Result<Tensor> {
        self.softmax_impl("softmax", axis, false)
    }

    /// Log-softmax along `axis`: `(x - max) - ln(sum(exp(x - max)))`, numerically stable,
    /// fused like [`Tensor::softmax`].
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 1.0], &[2]).unwrap();
    /// let l = x.log_softmax(0).unwrap().to_vec::<f64>().unwrap();
    /// assert!((l[0] + std::f64::consts::LN_2).abs() < 1e-15);
    /// ```
    pub fn log_softmax(&self, axis: usize) -> Result<Tensor> {
        self.softmax_impl("log_softmax", axis, true)
    }

    /// Fused cross-entropy from logits. `self` is `[N, C]` or `[N, C, d1, ...]` (classes on
    /// axis 1) or `[C]` with a 0-d target; `target` holds class indices (`int64` or `int32`)
    /// of shape `[N]` / `[N, d1, ...]`. Returns the per-sample loss (the target's shape, the
    /// logits' dtype): `-(1 - eps) * logp[target] - eps / C * sum_c logp[c]` with
    /// `eps = label_smoothing` (in `[0, 1]`), and 0 for samples whose target is
    /// `ignore_index`. A target outside `0..C` (other than `ignore_index`) is
    /// [`Error::IndexOutOfRange`]. The log-softmax is never materialized: one pass per row for
    /// the max, one for the log-sum-exp, then the target's logit is picked.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let logits = Tensor::from_vec(vec![0.0f32, 0.0, 5.0, 5.0], &[2, 2]).unwrap();
    /// let target = Tensor::from_vec(vec![1i64, -100], &[2]).unwrap();
    /// let loss = logits.cross_entropy(&target, -100, 0.0).unwrap().to_vec::<f32>().unwrap();
    /// assert!((loss[0] - std::f32::consts::LN_2).abs() < 1e-6);
    /// assert_eq!(loss[1], 0.0);
    /// ```
    pub fn cross_entropy(
        &self,
        target: &Tensor,
        ignore_index: i64,
        label_smoothing: f64,
    ) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        if !matches!(target.dtype(), DType::I64 | DType::I32) {
            return Err(Error::DTypeMismatch {
                op: OP,
                expected: "int64 or int32 class indices for the target".into(),
                got: target.dtype(),
            });
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(Error::invalid(
                OP,
                format!("label_smoothing must be in [0, 1], got {label_smoothing}"),
            ));
        }
        let shape = self.shape();
        let (classes, expected_target): (usize, Vec<usize>) = match shape.len() {
            0 => {
                return Err(Error::BadShape {
                    op: OP,
                    shape: vec![],
                    msg: "logits need a class dimension ([C], [N, C] or [N, C, d1, ...])".into(),
                })
            }
            1 => (shape[0], vec![]),
            _ => {
                let mut t = vec![shape[0]];
                t.extend_from_slice(&shape[2..]);
                (shape[1], t)
            }
        };
        if target.shape() != expected_target.as_slice() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: shape.to_vec(),
                rhs: target.shape().to_vec(),
                hint: format!("the target must have shape {expected_target:?} for these logits"),
            });
        }
        let spatial: usize = shape.get(2..).map_or(1, |s| s.iter().product());
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || target.device().is_cuda() {
            return crate::cuda::cross_entropy(
                self,
                target,
                classes,
                spatial,
                ignore_index,
                label_smoothing,
            );
        }
        let targets = target.cast(DType::I64)?.to_vec::<i64>()?;
        fn run<F: SoftmaxFloat>(
            logits: &Tensor,
            targets: &[i64],
            dims: (usize, usize),
            ignore_index: i64,
            eps: f64,
            out_shape: &[usize],
        ) -> Result<Tensor> {
            let eps = F::from_f64(eps);
            let out = with_contiguous(logits, |x: &[F]| {
                kernels::cross_entropy(x, targets, dims.0, dims.1, ignore_index, eps)
            })??;
            Tensor::from_vec(out, out_shape)
        }
        self.cpu(OP)?;
        let dims = (classes, spatial);
        let ts = target.shape();
        match self.dtype() {
            DType::F32 => run::<f32>(self, &targets, dims, ignore_index, label_smoothing, ts),
            DType::F64 => run::<f64>(self, &targets, dims, ignore_index, label_smoothing, ts),
            DType::F16 | DType::BF16 => {
                let x = self.cast(DType::F32)?;
                run::<f32>(&x, &targets, dims, ignore_index, label_smoothing, ts)?
                    .cast(self.dtype())
            }
            dtype => Err(Error::UnsupportedDType {
                op: OP,
                dtype,
                device: self.device(),
            }),
        }
    }
}
