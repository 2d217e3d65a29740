//! `torch.nn.functional`: activations, convolution, pooling, normalization, dropout, embedding
//! and losses. Each is a thin wrapper over the shared composites ([`Functional`]) run on the
//! [`Eager`] emitter.

use crate::emitter::Eager;
use crate::tensor::Tensor;
use tandem_ir::{BatchNormOutput, EmitExt, Functional};
use tandem_tensor::{Conv2dParams, Pool2dParams, Result};

pub use tandem_ir::{CrossEntropyOptions, Reduction};

const E: Eager = Eager;

/// `F.relu`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    E.relu(x)
}
/// `F.leaky_relu`.
pub fn leaky_relu(x: &Tensor, negative_slope: f64) -> Result<Tensor> {
    E.leaky_relu(x, negative_slope)
}
/// `F.gelu` (exact, or the tanh approximation).
pub fn gelu(x: &Tensor, tanh_approx: bool) -> Result<Tensor> {
    E.gelu(x, tanh_approx)
}
/// `F.silu`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    E.silu(x)
}
/// `F.elu`.
pub fn elu(x: &Tensor, alpha: f64) -> Result<Tensor> {
    E.elu(x, alpha)
}
/// `F.softplus`.
pub fn softplus(x: &Tensor, beta: f64, threshold: f64) -> Result<Tensor> {
    E.softplus(x, beta, threshold)
}
/// `torch.sigmoid`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    E.sigmoid(x)
}
/// `torch.tanh`.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    E.tanh(x)
}
/// `F.softmax`.
pub fn softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    E.softmax(x, dim)
}
/// `F.log_softmax`.
pub fn log_softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    E.log_softmax(x, dim)
}

/// `F.linear`: `x W^T + b` with W `[out, in]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    E.linear(x, weight, bias)
}
/// `F.conv2d` over NCHW input with weight `[out, in / groups, kh, kw]`.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    params: Conv2dParams,
) -> Result<Tensor> {
    E.conv2d(x, weight, bias, params)
}
/// `F.max_pool2d`.
pub fn max_pool2d(x: &Tensor, params: Pool2dParams) -> Result<Tensor> {
    E.max_pool2d(x, params)
}
/// `F.avg_pool2d`.
pub fn avg_pool2d(x: &Tensor, params: Pool2dParams) -> Result<Tensor> {
    E.avg_pool2d(x, params)
}
/// `F.adaptive_avg_pool2d`.
pub fn adaptive_avg_pool2d(x: &Tensor, output_size: [usize; 2]) -> Result<Tensor> {
    E.adaptive_avg_pool2d(x, output_size)
}
/// `F.dropout`: random zeros (probability `p`, from the global generator) and `1 / (1 - p)`
/// scaling in training mode; the identity otherwise.
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Result<Tensor> {
    E.dropout(x, p, training)
}
/// `F.layer_norm` over the last `normalized_dims` dims.
pub fn layer_norm(
    x: &Tensor,
    normalized_dims: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    E.layer_norm(x, normalized_dims, weight, bias, eps)
}
/// `F.batch_norm`. In training mode with running stats, the running mean and variance are
/// updated in place (`(1 - momentum) running + momentum batch`, unbiased variance).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &Tensor,
    running_mean: Option<&Tensor>,
    running_var: Option<&Tensor>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<Tensor> {
    let BatchNormOutput { output, running } = E.batch_norm(
        x,
        running_mean,
        running_var,
        weight,
        bias,
        training,
        momentum,
        eps,
    )?;
    if let (Some((nm, nv)), Some(rm), Some(rv)) = (running, running_mean, running_var) {
        rm.set_value(nm.value())?;
        rv.set_value(nv.value())?;
    }
    Ok(output)
}
/// `F.embedding`: rows of `weight` `[V, D]` picked by int64 `indices`.
pub fn embedding(indices: &Tensor, weight: &Tensor) -> Result<Tensor> {
    E.embedding(indices, weight)
}

/// `F.cross_entropy` from logits `[N, C, ...]` and int64 class targets `[N, ...]`, with the
/// default options (mean, no label smoothing, ignore_index -100).
pub fn cross_entropy(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    E.cross_entropy(logits, target, CrossEntropyOptions::default())
}
/// `F.cross_entropy` with options (reduction, label smoothing, ignore_index).
pub fn cross_entropy_with(
    logits: &Tensor,
    target: &Tensor,
    options: CrossEntropyOptions,
) -> Result<Tensor> {
    E.cross_entropy(logits, target, options)
}
/// `F.nll_loss` from log-probabilities and int64 targets.
pub fn nll_loss(
    log_probs: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    ignore_index: i64,
) -> Result<Tensor> {
    E.nll_loss(log_probs, target, reduction, ignore_index)
}
/// `F.mse_loss`.
pub fn mse_loss(x: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    E.mse_loss(x, target, reduction)
}
/// `F.l1_loss`.
pub fn l1_loss(x: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    E.l1_loss(x, target, reduction)
}
/// `F.smooth_l1_loss`.
pub fn smooth_l1_loss(
    x: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    beta: f64,
) -> Result<Tensor> {
    E.smooth_l1_loss(x, target, reduction, beta, false)
}
/// `F.binary_cross_entropy_with_logits`.
pub fn binary_cross_entropy_with_logits(
    logits: &Tensor,
    target: &Tensor,
    reduction: Reduction,
) -> Result<Tensor> {
    E.binary_cross_entropy_with_logits(logits, target, reduction)
}
/// `F.binary_cross_entropy` on probabilities.
pub fn binary_cross_entropy(p: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    E.binary_cross_entropy(p, target, reduction)
}
