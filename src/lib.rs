//! # Tandem
//!
//! A Rust deep-learning framework with two execution modes over one op vocabulary, one set of
//! gradient rules and one set of kernels.
//!
//! - [`tensor`]: the value type (`Tensor`: storage + layout), dtypes, devices, CPU kernels, I/O.
//! - [`ir`]: the op vocabulary, shape inference, the shared gradient rules and composites.
//! - [`eager`]: eager mode (PyTorch style): autograd `Tensor`, `nn`, `optim`.
//! - [`graph`]: graph mode (TF1 style): `Graph`, `Session`, symbolic gradients, optimizers.
//! - [`onnx`]: ONNX import and export.
//! - [`data`]: datasets, the background-thread `DataLoader`, MNIST.
//!
//! See `docs/architecture.md` for how the layers fit together.
pub use tandem_data as data;
pub use tandem_eager as eager;
pub use tandem_graph as graph;
pub use tandem_interop as interop;
pub use tandem_ir as ir;
pub use tandem_onnx as onnx;
pub use tandem_tensor as tensor;

#[cfg(feature = "candle")]
pub mod candle_interop;

/// The names most programs need, one `use tandem::prelude::*;` away.
pub mod prelude {
    // ---- eager mode ----
    pub use tandem_eager::nn::{self, Module};
    pub use tandem_eager::optim::{self, Optimizer};
    pub use tandem_eager::{
        autograd, manual_seed, no_grad, tensor, DType, Device, Error, Result, Tensor,
    };
}
