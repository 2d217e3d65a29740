//! Parameter initializers (`torch.nn.init`), drawing from the seeded global generator
//! ([`crate::manual_seed`]). Each replaces the tensor's value in place, like PyTorch's
//! trailing-underscore functions.

use crate::tensor::{Tensor, Value};
use tandem_tensor::random::with_global_rng;
use tandem_tensor::{Error, Result};

/// `(fan_in, fan_out)` of a weight: `[out, in, k...]` gives `in * k`, `out * k`.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::BadShape {
            op: "nn::init",
            shape: shape.to_vec(),
            msg: "fan in and fan out need a tensor with at least 2 dimensions".into(),
        });
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

/// The recommended gain of a nonlinearity (`torch.nn.init.calculate_gain`): `linear`,
/// `sigmoid`, `conv2d` (1), `tanh` (5/3), `relu` (sqrt 2), `leaky_relu` with slope `param`
/// (sqrt(2 / (1 + param^2))), `selu` (3/4).
pub fn calculate_gain(nonlinearity: &str, param: f64) -> Result<f64> {
    Ok(match nonlinearity {
        "linear" | "conv1d" | "conv2d" | "conv3d" | "sigmoid" => 1.0,
        "tanh" => 5.0 / 3.0,
        "relu" => 2f64.sqrt(),
        "leaky_relu" => (2.0 / (1.0 + param * param)).sqrt(),
        "selu" => 0.75,
        other => {
            return Err(Error::invalid(
                "calculate_gain",
                format!("unknown nonlinearity `{other}`"),
            ))
        }
    })
}

fn fill(t: &Tensor, f: impl FnOnce(&[usize], tandem_tensor::DType) -> Result<Value>) -> Result<()> {
    // Values are drawn on the host (the same numbers on every device) and copied to the
    // tensor's device.
    let v = f(&t.dims(), t.dtype())?.to_device(t.device())?;
    t.set_value(v)
}

/// Uniform in `[low, high)`.
pub fn uniform(t: &Tensor, low: f64, high: f64) -> Result<()> {
    fill(t, |s, d| {
        with_global_rng(|r| Value::rand_uniform(s, low, high, d, r))
    })
}

/// Normal with mean and standard deviation.
pub fn normal(t: &Tensor, mean: f64, std: f64) -> Result<()> {
    fill(t, |s, d| {
        with_global_rng(|r| Value::randn(s, mean, std, d, r))
    })
}

/// Zeros.
pub fn zeros(t: &Tensor) -> Result<()> {
    fill(t, |s, d| Ok(Value::zeros(s, d)))
}

/// Ones.
pub fn ones(t: &Tensor) -> Result<()> {
    fill(t, |s, d| Ok(Value::ones(s, d)))
}

/// A constant.
pub fn constant(t: &Tensor, value: f64) -> Result<()> {
    fill(t, |s, d| Ok(Value::full(s, value, d)))
}

/// Glorot uniform: `U(-b, b)`, `b = gain * sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(t: &Tensor, gain: f64) -> Result<()> {
    let (fi, fo) = fans(&t.dims())?;
    let b = gain * (6.0 / (fi + fo) as f64).sqrt();
    uniform(t, -b, b)
}

/// Glorot normal: `N(0, gain^2 * 2 / (fan_in + fan_out))`.
pub fn xavier_normal(t: &Tensor, gain: f64) -> Result<()> {
    let (fi, fo) = fans(&t.dims())?;
    normal(t, 0.0, gain * (2.0 / (fi + fo) as f64).sqrt())
}

/// Which fan Kaiming initialization preserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FanMode {
    /// Preserve the variance of activations in the forward pass (the default).
    #[default]
    FanIn,
    /// Preserve the variance of gradients in the backward pass.
    FanOut,
}

fn kaiming_std(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<f64> {
    let (fi, fo) = fans(&t.dims())?;
    let fan = match mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    if fan == 0 {
        return Err(Error::BadShape {
            op: "kaiming init",
            shape: t.dims(),
            msg: "the fan is zero".into(),
        });
    }
    Ok(calculate_gain(nonlinearity, a)? / (fan as f64).sqrt())
}

/// He uniform: `U(-b, b)`, `b = gain * sqrt(3 / fan)` (PyTorch's Linear and Conv weights use
/// `a = sqrt(5)`, `leaky_relu`, fan in).
pub fn kaiming_uniform(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<()> {
    let b = 3f64.sqrt() * kaiming_std(t, a, mode, nonlinearity)?;
    uniform(t, -b, b)
}

/// He normal: `N(0, (gain / sqrt(fan))^2)`.
pub fn kaiming_normal(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<()> {
    let std = kaiming_std(t, a, mode, nonlinearity)?;
    normal(t, 0.0, std)
}
