//! Normalization layers: [`BatchNorm`] (1d and 2d) and [`LayerNorm`].

use super::functional as F;
use super::Module;
use crate::tensor::{Tensor, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use tandem_tensor::{DType, Error, Result};

/// `nn.BatchNorm1d` / `nn.BatchNorm2d` (input `[N, C]`, `[N, C, L]` or `[N, C, H, W]`):
/// normalizes each channel with the batch statistics in training mode (updating the running
/// statistics with `momentum`) and with the running statistics in eval mode.
pub struct BatchNorm {
    /// Scale `[C]` (ones).
    pub weight: Option<Tensor>,
    /// Shift `[C]` (zeros).
    pub bias: Option<Tensor>,
    /// Running mean `[C]` (buffer).
    pub running_mean: Tensor,
    /// Running (unbiased) variance `[C]` (buffer).
    pub running_var: Tensor,
    /// Number of training batches seen (int64 0-d buffer).
    pub num_batches_tracked: Tensor,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f64,
    ranks: &'static [usize],
    training: AtomicBool,
}

impl BatchNorm {
    fn build(c: usize, ranks: &'static [usize]) -> BatchNorm {
        BatchNorm {
            weight: Some(Tensor::ones(&[c], DType::F32).requires_grad_(true)),
            bias: Some(Tensor::zeros(&[c], DType::F32).requires_grad_(true)),
            running_mean: Tensor::zeros(&[c], DType::F32),
            running_var: Tensor::ones(&[c], DType::F32),
            num_batches_tracked: Tensor::from_value(Value::scalar(0i64)),
            eps: 1e-5,
            momentum: 0.1,
            ranks,
            training: AtomicBool::new(true),
        }
    }

    /// `nn.BatchNorm1d(c)`: input `[N, C]` or `[N, C, L]`.
    pub fn new_1d(c: usize) -> BatchNorm {
        BatchNorm::build(c, &[2, 3])
    }

    /// `nn.BatchNorm2d(c)`: input `[N, C, H, W]`.
    pub fn new_2d(c: usize) -> BatchNorm {
        BatchNorm::build(c, &[4])
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if !self.ranks.contains(&dims.len()) {
            return Err(Error::BadShape {
                op: "batch_norm",
                shape: dims,
                msg: format!("expected an input of rank {:?}", self.ranks),
            });
        }
        let training = self.training.load(Ordering::Relaxed);
        let y = F::batch_norm(
            x,
            Some(&self.running_mean),
            Some(&self.running_var),
            self.weight.as_ref(),
            self.bias.as_ref(),
            training,
            self.momentum,
            self.eps,
        )?;
        if training {
            // Counted on the counter's device (no host round trip for a model on a GPU).
            self.num_batches_tracked.update_value(|n| {
                *n = n.scalar_op(tandem_tensor::BinaryOp::Add, 1.0, false)?;
                Ok(())
            })?;
        }
        Ok(y)
    }

    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }

    fn local_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
            (
                "num_batches_tracked".to_string(),
                self.num_batches_tracked.clone(),
            ),
        ]
    }

    fn set_training_local(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

/// `nn.LayerNorm(normalized_shape)`: normalizes over the last dims, with an elementwise
/// affine transform (weight ones, bias zeros).
pub struct LayerNorm {
    /// Scale (shaped like `normalized_shape`).
    pub weight: Option<Tensor>,
    /// Shift.
    pub bias: Option<Tensor>,
    /// Added to the variance.
    pub eps: f64,
    normalized_shape: Vec<usize>,
}

impl LayerNorm {
    /// A layer over trailing dims `normalized_shape`, eps 1e-5, with affine parameters.
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm {
            weight: Some(Tensor::ones(normalized_shape, DType::F32).requires_grad_(true)),
            bias: Some(Tensor::zeros(normalized_shape, DType::F32).requires_grad_(true)),
            eps: 1e-5,
            normalized_shape: normalized_shape.to_vec(),
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let k = self.normalized_shape.len();
        if dims.len() < k || dims[dims.len() - k..] != self.normalized_shape[..] {
            return Err(Error::ShapeMismatch {
                op: "layer_norm",
                lhs: dims,
                rhs: self.normalized_shape.clone(),
                hint: "the input's trailing dims must equal normalized_shape".into(),
            });
        }
        F::layer_norm(x, k, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }

    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = Vec::new();
        if let Some(w) = &self.weight {
            v.push(("weight".to_string(), w.clone()));
        }
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}
