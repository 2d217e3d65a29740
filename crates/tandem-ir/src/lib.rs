//! # tandem-ir
//!
//! Tandem's op vocabulary and everything about ops that is independent of how they run:
//! - [`Op`]: the primitive and fused ops, with attributes;
//! - [`infer()`]: dtype and shape inference (NumPy broadcasting, unknown dims);
//! - [`Emit`] / [`EmitExt`]: the trait through which ops are applied, implemented by eager mode
//!   (run now, record on a tape), graph mode (append a node) and [`Eval`] (run on plain tensors);
//! - [`grad`]: the gradient rule of every differentiable op, written once over `Emit`, and the
//!   driver's per-op step ([`grad::backprop`]) that undoes broadcasting;
//! - [`Functional`]: composite ops (linear, gelu, losses, norms, dropout, ...) as
//!   decompositions into primitives;
//! - [`eval()`]: the one dispatch place from an op to its kernel.
//! - [`fused`]: op sequences both modes run as one pass (relu's gradient mask and product).
//!
//! ```
//! use tandem_ir::{Eval, EmitExt, Functional};
//! use tandem_tensor::Tensor;
//! let e = Eval::default();
//! let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3]).unwrap();
//! let y = e.relu(&x).unwrap();
//! assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 0.0, 3.0]);
//! let m = e.mse_loss(&x, &y, tandem_ir::Reduction::Sum).unwrap();
//! assert_eq!(m.item().unwrap(), 4.0);
//! ```

pub mod composite;
pub mod emit;
pub mod eval;
pub mod fused;
pub mod grad;
pub mod infer;
pub mod op;

pub use composite::{BatchNormOutput, CrossEntropyOptions, Functional, Reduction};
pub use emit::{promote, Emit, EmitExt};
pub use eval::{eval, Eval};
pub use infer::{infer, Dim, ValueInfo};
pub use op::{Distribution, Op};
