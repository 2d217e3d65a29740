//! Neural-network building blocks, like `torch.nn`: the [`Module`] trait, layers, initializers
//! ([`init`]) and the functional API ([`functional`], losses included).

mod activation;
pub mod functional;
pub mod init;
mod layers;
mod module;
mod norm;

pub use activation::{
    AdaptiveAvgPool2d, AvgPool2d, Dropout, Flatten, LeakyReLU, MaxPool2d, ReLU, Sigmoid, Softmax,
    Tanh, GELU,
};
pub use layers::{Conv2d, Embedding, Linear, Sequential};
pub use module::Module;
pub use norm::{BatchNorm, LayerNorm};
pub use tandem_tensor::{Conv2dParams, Pool2dParams};
