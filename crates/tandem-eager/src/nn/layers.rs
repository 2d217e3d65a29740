//! Layers with parameters (Linear, Conv2d, Embedding) and the [`Sequential`] container.

use super::functional as F;
use super::init::{self, FanMode};
use super::Module;
use crate::tensor::Tensor;
use tandem_tensor::{Conv2dParams, DType, Error, Result};

fn param(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32).requires_grad_(true)
}

/// PyTorch's default init of a weight and bias: kaiming_uniform(a = sqrt 5) for the weight,
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` for the bias.
fn default_init(weight: &Tensor, bias: Option<&Tensor>) -> Result<()> {
    init::kaiming_uniform(weight, 5f64.sqrt(), FanMode::FanIn, "leaky_relu")?;
    if let Some(b) = bias {
        let (fan_in, _) = init::fans(&weight.dims())?;
        let bound = if fan_in > 0 {
            1.0 / (fan_in as f64).sqrt()
        } else {
            0.0
        };
        init::uniform(b, -bound, bound)?;
    }
    Ok(())
}

/// `nn.Linear`: `y = x W^T + b`, weight `[out, in]`, bias `[out]`.
pub struct Linear {
    /// Weight `[out_features, in_features]`.
    pub weight: Tensor,
    /// Bias `[out_features]`.
    pub bias: Option<Tensor>,
    name: String,
}

impl Linear {
    /// A layer with PyTorch's default initialization (from the global generator).
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = param(&[out_features, in_features]);
        let bias = bias.then(|| param(&[out_features]));
        default_init(&weight, bias.as_ref())?;
        Ok(Linear {
            weight,
            bias,
            name: format!("Linear({in_features}, {out_features})"),
        })
    }

    /// Names the layer in error messages (e.g. `fc1`).
    pub fn with_name(mut self, name: impl Into<String>) -> Linear {
        self.name = name.into();
        self
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.dim(1).unwrap_or(0)
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inf = self.in_features();
        if x.dim(-1).ok() != Some(inf) {
            let xs = x.dims();
            return Err(Error::ShapeMismatch {
                op: "linear",
                lhs: xs.clone(),
                rhs: self.weight.dims(),
                hint: format!(
                    "input of shape {xs:?} has {} features, but the layer's weight [out, in] \
                     expects {inf}",
                    xs.last().copied().unwrap_or(0)
                ),
            }
            .context(self.name.clone()));
        }
        F::linear(x, &self.weight, self.bias.as_ref()).map_err(|e| e.context(self.name.clone()))
    }

    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

/// `nn.Conv2d` over NCHW input: weight `[out, in / groups, kh, kw]`, bias `[out]`.
pub struct Conv2d {
    /// Weight `[out_channels, in_channels / groups, kh, kw]`.
    pub weight: Tensor,
    /// Bias `[out_channels]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub params: Conv2dParams,
}

impl Conv2d {
    /// A square-kernel convolution with stride 1, no padding, no dilation, one group, a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Result<Conv2d> {
        Conv2d::with_params(
            in_channels,
            out_channels,
            [kernel, kernel],
            Conv2dParams::default(),
            true,
        )
    }

    /// A convolution with all options.
    pub fn with_params(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        params: Conv2dParams,
        bias: bool,
    ) -> Result<Conv2d> {
        let g = params.groups;
        if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
            return Err(Error::invalid(
                "Conv2d",
                format!(
                    "in_channels {in_channels} and out_channels {out_channels} must be divisible \
                     by groups {g}"
                ),
            ));
        }
        let weight = param(&[out_channels, in_channels / g, kernel[0], kernel[1]]);
        let bias = bias.then(|| param(&[out_channels]));
        default_init(&weight, bias.as_ref())?;
        Ok(Conv2d {
            weight,
            bias,
            params,
        })
    }

    /// Sets the padding (both directions).
    pub fn padding(mut self, p: usize) -> Conv2d {
        self.params.padding = [p, p];
        self
    }

    /// Sets the stride (both directions).
    pub fn stride(mut self, s: usize) -> Conv2d {
        self.params.stride = [s, s];
        self
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::conv2d(x, &self.weight, self.bias.as_ref(), self.params)
    }

    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

/// `nn.Embedding`: a lookup table `[num_embeddings, dim]` initialized from `N(0, 1)`.
pub struct Embedding {
    /// The table.
    pub weight: Tensor,
}

impl Embedding {
    /// A table of `num` rows of width `dim`.
    pub fn new(num: usize, dim: usize) -> Result<Embedding> {
        let weight = param(&[num, dim]);
        init::normal(&weight, 0.0, 1.0)?;
        Ok(Embedding { weight })
    }
}

impl Module for Embedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::embedding(x, &self.weight)
    }

    fn local_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}

/// `nn.Sequential`: applies its children in order; they are named `0`, `1`, ...
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer (builder style).
    #[allow(clippy::should_implement_trait)]
    pub fn add<M: Module + 'static>(mut self, m: M) -> Sequential {
        self.layers.push(Box::new(m));
        self
    }

    /// Appends a boxed layer.
    pub fn push(&mut self, m: Box<dyn Module>) {
        self.layers.push(m);
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h).map_err(|e| e.context(format!("layer {i}")))?;
        }
        Ok(h)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), &**l as &dyn Module))
            .collect()
    }
}
