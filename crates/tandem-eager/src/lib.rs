//! # tandem-eager
//!
//! Tandem's eager (define-by-run) mode, for PyTorch users: every op runs at once, and when a
//! gradient is wanted the op is recorded on its output so that `backward()` can fill the
//! `.grad()` of the leaves.
//!
//! - [`Tensor`]: a cheap-to-clone handle with autograd (`requires_grad`, `backward`, `grad`,
//!   `detach`), arithmetic operators returning `Result<Tensor>`, and PyTorch-named methods;
//! - [`no_grad`], [`enable_grad`], [`detect_anomaly`]: scope guards;
//! - [`autograd::grad`]: the functional form, with higher-order gradients;
//! - [`nn`]: modules, initializers and `nn::functional` (losses included);
//! - [`optim`]: SGD, Adam, AdamW, RMSprop, gradient clipping and learning-rate schedulers.
//!
//! Every op goes through [`Eager`], an implementation of [`tandem_ir::Emit`]: the kernels and
//! the gradient rules are the shared ones of `tandem-ir`, also used by graph mode.
//!
//! ```
//! use tandem_eager::{tensor, Tensor, DType};
//! let s = (tensor(3.0) + tensor(4.0)).unwrap();
//! assert_eq!(s.item().unwrap(), 7.0);
//!
//! let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().requires_grad_(true);
//! let y = (&x * &x).unwrap().sum_all().unwrap();
//! y.backward().unwrap();
//! assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
//! # let _ = DType::F32;
//! ```

pub mod autograd;
mod emitter;
mod mode;
pub mod nn;
mod operators;
mod ops;
pub mod optim;
mod tensor;

pub use autograd::BackwardOptions;
pub use emitter::{set_op_observer, Eager, OpObserver};
pub use mode::{
    detect_anomaly, enable_grad, is_anomaly_enabled, is_grad_enabled, no_grad, set_detect_anomaly,
    set_grad_enabled, AnomalyGuard, GradModeGuard,
};
pub use tandem_tensor::random::manual_seed;
pub use tandem_tensor::{DType, Device, Error, Result};
pub use tensor::{tensor, Tensor, Value};
