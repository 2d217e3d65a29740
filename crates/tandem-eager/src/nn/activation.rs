//! Parameter-free layers: activations, pooling, flatten, dropout.

use super::functional as F;
use super::Module;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use tandem_tensor::{Pool2dParams, Result};

macro_rules! simple_layer {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;
        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                $body
            }
        }
    };
}

simple_layer!(
    /// `nn.ReLU`.
    ReLU, |x| F::relu(x)
);
simple_layer!(
    /// `nn.Sigmoid`.
    Sigmoid, |x| F::sigmoid(x)
);
simple_layer!(
    /// `nn.Tanh`.
    Tanh, |x| F::tanh(x)
);

/// `nn.LeakyReLU` with a negative slope (PyTorch's default 0.01).
#[derive(Clone, Copy, Debug)]
pub struct LeakyReLU(pub f64);

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU(0.01)
    }
}

impl Module for LeakyReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::leaky_relu(x, self.0)
    }
}

/// `nn.GELU` (exact unless `tanh_approx`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GELU {
    /// Use the tanh approximation (`approximate='tanh'`).
    pub tanh_approx: bool,
}

impl Module for GELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::gelu(x, self.tanh_approx)
    }
}

/// `nn.Softmax(dim)`.
#[derive(Clone, Copy, Debug)]
pub struct Softmax(pub isize);

impl Module for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::softmax(x, self.0)
    }
}

/// `nn.Flatten`: merges dims `start..=end` (PyTorch's default 1..=-1).
#[derive(Clone, Copy, Debug)]
pub struct Flatten {
    /// First merged dim.
    pub start: isize,
    /// Last merged dim.
    pub end: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start: 1, end: -1 }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(self.start, self.end)
    }
}

/// `nn.MaxPool2d`.
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d(pub Pool2dParams);

impl MaxPool2d {
    /// A square window of size `k` with stride `k` (PyTorch's default stride).
    pub fn new(k: usize) -> MaxPool2d {
        MaxPool2d(Pool2dParams::square(k, k, 0))
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::max_pool2d(x, self.0)
    }
}

/// `nn.AvgPool2d`.
#[derive(Clone, Copy, Debug)]
pub struct AvgPool2d(pub Pool2dParams);

impl AvgPool2d {
    /// A square window of size `k` with stride `k`.
    pub fn new(k: usize) -> AvgPool2d {
        AvgPool2d(Pool2dParams::square(k, k, 0))
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::avg_pool2d(x, self.0)
    }
}

/// `nn.AdaptiveAvgPool2d` to a fixed output size.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d(pub [usize; 2]);

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::adaptive_avg_pool2d(x, self.0)
    }
}

/// `nn.Dropout(p)`: active in training mode (the default), the identity in eval mode.
#[derive(Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    training: AtomicBool,
}

impl Dropout {
    /// Dropout with probability `p`.
    pub fn new(p: f64) -> Dropout {
        Dropout {
            p,
            training: AtomicBool::new(true),
        }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        F::dropout(x, self.p, self.training.load(Ordering::Relaxed))
    }

    fn set_training_local(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
