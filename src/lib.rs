//! # Tandem
//!
//! A Rust deep-learning framework with two execution modes over one op vocabulary, one set of
//! gradient rules and one set of kernels.
pub use tandem_eager as eager;
pub use tandem_tensor as tensor;

/// The names most programs need, one `use tandem::prelude::*;` away.
pub mod prelude {
    // ---- eager mode ----
    pub use tandem_eager::nn::{self, Module};
    pub use tandem_eager::optim::{self, Optimizer};
    pub use tandem_eager::{
        autograd, manual_seed, no_grad, tensor, DType, Device, Error, Result, Tensor,
    };
}
